package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"
)

// epoch stamps every entry and the image config, so equal inputs give equal digests.
var epoch = time.Unix(0, 0).UTC()

// entry is one path of a layer: a regular file copied from the host, a directory or a symlink.
type entry struct {
	typ    byte
	src    string      // host file, for tar.TypeReg
	mode   fs.FileMode // permission bits (and sticky) for files and directories
	target string      // for tar.TypeSymlink, verbatim
}

// layer is a set of entries keyed by clean absolute path; parents are added as 0755
// directories when written.
type layer struct{ entries map[string]*entry }

func newLayer() *layer { return &layer{entries: map[string]*entry{}} }

func (l *layer) put(p string, e *entry) error {
	p = path.Clean("/" + p)
	if p == "/" {
		return fmt.Errorf("cannot add / itself")
	}
	if old, ok := l.entries[p]; ok {
		// The same directory (or the same link) twice is harmless; anything else is a mistake.
		if old.typ == e.typ && old.target == e.target && old.src == e.src && (old.typ != tar.TypeDir || old.mode == e.mode) {
			return nil
		}
		return fmt.Errorf("%s added twice with different content", p)
	}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if parent, ok := l.entries[d]; ok && parent.typ != tar.TypeDir {
			return fmt.Errorf("%s: parent %s is not a directory in the image", p, d)
		}
	}
	l.entries[p] = e
	return nil
}

// addFile copies host file src to dst, keeping its permission bits.
func (l *layer) addFile(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	return l.put(dst, &entry{typ: tar.TypeReg, src: src, mode: fi.Mode() & (fs.ModePerm | fs.ModeSticky)})
}

func (l *layer) addDir(dst string, mode fs.FileMode) error {
	return l.put(dst, &entry{typ: tar.TypeDir, mode: mode})
}

func (l *layer) addSymlink(dst, target string) error {
	return l.put(dst, &entry{typ: tar.TypeSymlink, target: target})
}

// addClosure adds programs of a root filesystem with everything they load (see closure.go).
func (l *layer) addClosure(r rootFS, programs []string) error {
	c := &closure{files: map[string]bool{}, links: map[string]string{}}
	for _, p := range programs {
		if err := r.addProgram(c, p); err != nil {
			return err
		}
	}
	for p, target := range c.links {
		if err := l.addSymlink(p, target); err != nil {
			return err
		}
	}
	for p := range c.files {
		if err := l.addFile(p, r.host(p)); err != nil {
			return err
		}
	}
	return nil
}

// paths returns every path of the layer, implicit parents included, sorted so that a
// directory comes before what it holds.
func (l *layer) paths() []string {
	all := map[string]bool{}
	for p := range l.entries {
		all[p] = true
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			all[d] = true
		}
	}
	out := make([]string, 0, len(all))
	for p := range all {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// writeTar writes the layer as a tar stream, every entry owned by root and dated epoch.
func (l *layer) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, p := range l.paths() {
		e, ok := l.entries[p]
		if !ok {
			e = &entry{typ: tar.TypeDir, mode: 0o755}
		}
		hdr := &tar.Header{Name: p[1:], Typeflag: e.typ, ModTime: epoch, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			hdr.Name += "/"
			hdr.Mode = int64(modeBits(e.mode))
		case tar.TypeSymlink:
			hdr.Linkname = e.target
			hdr.Mode = 0o777
		case tar.TypeReg:
			fi, err := os.Stat(e.src)
			if err != nil {
				return err
			}
			hdr.Size = fi.Size()
			hdr.Mode = int64(modeBits(e.mode))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.typ == tar.TypeReg {
			if err := copyFile(tw, e.src, hdr.Size); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// modeBits turns Go's file mode into the Unix bits tar wants (sticky is 01000 there).
func modeBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s changed size while being copied (%d of %d bytes)", src, n, size)
	}
	return err
}
