package main

import (
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	var (
		out                                                            = fl.String("o", "", "output tarball (docker save format)")
		rootfs                                                         = fl.String("rootfs", "", "root filesystem directory that -closure paths are taken from")
		entrypoint                                                     = fl.String("entrypoint", "", `entrypoint, a JSON array: '["/bin/app","serve"]'`)
		cmd                                                            = fl.String("cmd", "", "default arguments, a JSON array")
		user                                                           = fl.String("user", "", "user[:group] the process runs as")
		workdir                                                        = fl.String("workdir", "", "working directory")
		stopSignal                                                     = fl.String("stop-signal", "", "signal that stops the container (e.g. SIGRTMIN+3)")
		gzipLevel                                                      = fl.Int("gzip", gzip.BestSpeed, "gzip level of the layers (0 stores them uncompressed in gzip framing)")
		tags, layerTars, files, dirs, symlinks, closures, envs, labels list
	)
	fl.Var(&tags, "tag", "repository:tag of the image (repeatable)")
	fl.Var(&layerTars, "layer-tar", "tar file used as a layer as it is, below the file layer (repeatable, bottom first)")
	fl.Var(&files, "file", "DST=SRC: host file SRC at DST in the image, permission bits kept (repeatable)")
	fl.Var(&dirs, "dir", "DST[:MODE]: a directory, MODE in octal, default 0755 (repeatable)")
	fl.Var(&symlinks, "symlink", "DST=TARGET: a symbolic link (repeatable)")
	fl.Var(&closures, "closure", "path in -rootfs of a program to copy with its loader and shared libraries (repeatable)")
	fl.Var(&envs, "env", "KEY=VALUE in the environment (repeatable)")
	fl.Var(&labels, "label", "KEY=VALUE label (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("-o is required")
	}
	s := &spec{tags: tags, layerTars: layerTars, files: newLayer(), gzipLevel: *gzipLevel}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-file %q: want DST=SRC", f)
		}
		if err := s.files.addFile(dst, src); err != nil {
			return err
		}
	}
	for _, d := range dirs {
		dst, m, hasMode := strings.Cut(d, ":")
		mode := uint64(0o755)
		if hasMode {
			var err error
			if mode, err = strconv.ParseUint(m, 8, 32); err != nil || mode > 0o1777 {
				return fmt.Errorf("-dir %q: bad mode", d)
			}
		}
		fm := fs.FileMode(mode & 0o777)
		if mode&0o1000 != 0 {
			fm |= fs.ModeSticky
		}
		if err := s.files.addDir(dst, fm); err != nil {
			return err
		}
	}
	for _, l := range symlinks {
		dst, target, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-symlink %q: want DST=TARGET", l)
		}
		if err := s.files.addSymlink(dst, target); err != nil {
			return err
		}
	}
	if len(closures) > 0 {
		if *rootfs == "" {
			return fmt.Errorf("-closure needs -rootfs")
		}
		if err := s.files.addClosure(rootFS{root: *rootfs}, closures); err != nil {
			return err
		}
	}
	cfg := v1.Config{User: *user, WorkingDir: *workdir, StopSignal: *stopSignal, Env: envs}
	for _, a := range []struct {
		flag, value string
		dst         *[]string
	}{{"entrypoint", *entrypoint, &cfg.Entrypoint}, {"cmd", *cmd, &cfg.Cmd}} {
		if a.value == "" {
			continue
		}
		if err := json.Unmarshal([]byte(a.value), a.dst); err != nil {
			return fmt.Errorf("-%s %q: want a JSON array of strings: %w", a.flag, a.value, err)
		}
	}
	if len(labels) > 0 {
		cfg.Labels = map[string]string{}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fmt.Errorf("-label %q: want KEY=VALUE", l)
			}
			cfg.Labels[k] = v
		}
	}
	for _, e := range envs {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("-env %q: want KEY=VALUE", e)
		}
	}
	s.config = cfg
	digest, err := build(s, *out)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", *out, digest, strings.Join(tags, " "))
	return nil
}
