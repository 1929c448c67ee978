package main

import (
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinks bounds symlink hops while resolving one path, as the kernel's ELOOP does.
const maxLinks = 40

// libDirs are where the dynamic loader of a Debian amd64 system looks for a DT_NEEDED
// library (ld.so.conf.d's multiarch directories, then the defaults).
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
	"/usr/local/lib",
}

// rootFS reads paths inside a root filesystem directory as a process chrooted there would:
// absolute symlinks are resolved against root, never against the host.
type rootFS struct{ root string }

// link is a symlink met while resolving a path: where it is and what it points to, verbatim.
type link struct{ path, target string }

// host is where an in-root path is on the host.
func (r rootFS) host(p string) string { return filepath.Join(r.root, filepath.FromSlash(p)) }

// resolve follows every symlink of an absolute in-root path, in every component, and returns
// the real path and the links met on the way (each must exist in an image for the path to
// resolve there too).
func (r rootFS) resolve(p string) (string, []link, error) {
	var links []link
	todo := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(r.host(next))
		if err != nil {
			return "", nil, fmt.Errorf("resolving %s in %s: %w", p, r.root, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > maxLinks {
			return "", nil, fmt.Errorf("resolving %s in %s: too many levels of symbolic links", p, r.root)
		}
		target, err := os.Readlink(r.host(next))
		if err != nil {
			return "", nil, err
		}
		links = append(links, link{path: next, target: target})
		if path.IsAbs(target) {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, links, nil
}

// closure is the set of in-root paths an image needs for some programs to run: regular files
// (real paths) and the symlinks leading to them.
type closure struct {
	files map[string]bool
	links map[string]string
}

// addProgram adds the file at p (following links) and, if it is a dynamically linked ELF
// file, its interpreter and libraries, transitively.
func (r rootFS) addProgram(c *closure, p string) error {
	real, links, err := r.resolve(p)
	if err != nil {
		return err
	}
	for _, l := range links {
		c.links[l.path] = l.target
	}
	if c.files[real] {
		return nil
	}
	c.files[real] = true
	deps, err := r.elfDeps(real)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, d := range deps {
		if err := r.addProgram(c, d); err != nil {
			return err
		}
	}
	return nil
}

// elfDeps returns the in-root paths of the interpreter and DT_NEEDED libraries of an ELF
// file; nothing for a static binary, a script or any other file.
func (r rootFS) elfDeps(real string) ([]string, error) {
	if ok, err := isELF(r.host(real)); !ok || err != nil {
		return nil, err
	}
	f, err := elf.Open(r.host(real))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var deps []string
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("reading PT_INTERP: %w", err)
		}
		deps = append(deps, strings.TrimRight(string(b), "\x00"))
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("reading DT_NEEDED: %w", err)
	}
	for _, lib := range needed {
		p, err := r.findLib(lib)
		if err != nil {
			return nil, err
		}
		deps = append(deps, p)
	}
	return deps, nil
}

// isELF reports whether the file starts with the ELF magic number.
func isELF(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [len(elf.ELFMAG)]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, nil // shorter than the magic: not ELF
	}
	return string(magic[:]) == elf.ELFMAG, nil
}

// findLib finds a library by its DT_NEEDED name in the loader's directories.
func (r rootFS) findLib(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range libDirs {
		p := path.Join(d, name)
		if _, _, err := r.resolve(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not found in %s under %s", name, strings.Join(libDirs, ":"), r.root)
}
