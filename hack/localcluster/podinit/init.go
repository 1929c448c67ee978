// Package podinit is the first program of every local-cluster container: the node
// agent re-execs itself as `localcluster init` in fresh mount and UTS namespaces, and
// this package makes the pod's paths exist there (volumes at their mountPaths, the
// service-account files) before exec'ing the container's binary in place.
//
// Nothing it does is visible on the host: / is made recursively private first, and
// the container sees a new root, a tmpfs mirroring the host's / entry by entry, so
// a mountPath that does not exist on the host (/data, /var/run/secrets/...) is
// created on a tmpfs, never in a system directory. Main executes in a single process
// with nothing else running; it is not for concurrent use.
package podinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mount is one bind mount into the container.
type Mount struct {
	// Source is a host path (a directory, or a file for a subPath mount).
	Source string `json:"source"`
	// Target is the path the container sees.
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Spec is what the agent hands the init, as a JSON file.
type Spec struct {
	// Root is an empty host directory the new root's tmpfs is mounted on.
	Root       string   `json:"root"`
	Hostname   string   `json:"hostname"`
	Mounts     []Mount  `json:"mounts"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir,omitempty"`
}

// ErrorFD is the descriptor on which the init reports a setup failure to the agent.
// It is close-on-exec, so the agent reading EOF with no message means the exec of
// the container's binary succeeded.
const ErrorFD = 3

// Main runs the init with the spec at specPath and, on success, never returns.
func Main(specPath string) error {
	syscall.CloseOnExec(ErrorFD)
	err := run(specPath)
	if err != nil {
		f := os.NewFile(ErrorFD, "init-errors")
		_, _ = fmt.Fprint(f, err.Error())
	}
	return err
}

func run(specPath string) error {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("reading init spec: %w", err)
	}
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("parsing init spec: %w", err)
	}
	if len(s.Argv) == 0 {
		return errors.New("init spec has no command")
	}
	// Without this, mounts below would propagate to the host's shared mounts.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	if s.Hostname != "" {
		if err := syscall.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("setting hostname: %w", err)
		}
	}
	prog, err := openProgram(s.Argv[0], s.Env)
	if err != nil {
		return err
	}
	// Open every source before anything is mounted: a later mount (the private /tmp,
	// or a volume) may cover a source's host path, but an open O_PATH descriptor
	// still names it, and /proc/self/fd/N can be bind-mounted.
	srcs := make([]source, len(s.Mounts))
	for i, m := range s.Mounts {
		fd, err := syscall.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("volume source %s: %w", m.Source, err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fmt.Errorf("volume source %s: %w", m.Source, err)
		}
		srcs[i] = source{path: fmt.Sprintf("/proc/self/fd/%d", fd), dir: st.Mode&syscall.S_IFMT == syscall.S_IFDIR}
	}
	if err := mirrorInto(s.Root, "/"); err != nil {
		return err
	}
	if err := syscall.Chroot(s.Root); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	fs := &tree{ours: map[string]bool{"/": true}}
	for i, m := range s.Mounts {
		if err := fs.bind(m, srcs[i]); err != nil {
			return err
		}
	}
	wd := "/"
	if s.WorkingDir != "" {
		if wd, err = fs.ensureDir(s.WorkingDir); err != nil {
			return fmt.Errorf("creating working dir: %w", err)
		}
	}
	if err := os.Chdir(wd); err != nil {
		return fmt.Errorf("chdir %s: %w", wd, err)
	}
	if err := syscall.Exec(prog, s.Argv, s.Env); err != nil {
		return fmt.Errorf("exec %s: %w", s.Argv[0], err)
	}
	return nil
}

// openProgram finds the program on the container's PATH (not the agent's) and
// opens it, so it can be exec'd through /proc/self/fd even when a mount (the
// private /tmp) covers its host path. Programs are binaries, not scripts: a
// script's interpreter could not reopen a close-on-exec descriptor.
func openProgram(name string, env []string) (string, error) {
	prog := name
	if !strings.Contains(prog, "/") {
		for _, e := range env {
			if p, ok := strings.CutPrefix(e, "PATH="); ok {
				_ = os.Setenv("PATH", p)
			}
		}
		var err error
		if prog, err = exec.LookPath(prog); err != nil {
			return "", fmt.Errorf("finding %s: %w", name, err)
		}
	}
	fd, err := syscall.Open(prog, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", prog, err)
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), nil
}

// mirrorInto mounts a tmpfs on dst and fills it with src's entries: directories are
// recursive bind mounts, symlinks are copied, other files are bind-mounted. The
// result looks like src but new entries can be made in it without touching src.
func mirrorInto(dst, src string) error {
	if err := syscall.Mount("tmpfs", dst, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mounting tmpfs on %s: %w", dst, err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(from)
			if err != nil {
				return fmt.Errorf("reading link %s: %w", from, err)
			}
			if err := os.Symlink(target, to); err != nil {
				return fmt.Errorf("copying link %s: %w", from, err)
			}
		case e.IsDir():
			if err := os.Mkdir(to, 0o755); err != nil {
				return fmt.Errorf("creating %s: %w", to, err)
			}
			if err := syscall.Mount(from, to, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
				return fmt.Errorf("binding %s: %w", from, err)
			}
		default:
			if err := os.WriteFile(to, nil, 0o644); err != nil {
				return fmt.Errorf("creating %s: %w", to, err)
			}
			// Sockets and the like may refuse a bind; the container then lacks that one
			// entry, which only matters to programs that talk to host daemons.
			_ = syscall.Mount(from, to, "", syscall.MS_BIND, "")
		}
	}
	return nil
}

// tree tracks which directories of the new root are ours (tmpfs, or made on one),
// so a missing path is created there, and a host directory is first replaced by a
// tmpfs mirror of itself.
type tree struct {
	ours  map[string]bool
	stage int
}

// ensureDir makes dir exist in the container and returns its path with symlinks
// resolved.
func (t *tree) ensureDir(dir string) (string, error) {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return "", fmt.Errorf("%s exists and is not a directory", dir)
		}
		return filepath.EvalSymlinks(dir)
	}
	parent, err := t.ensureDir(filepath.Dir(dir))
	if err != nil {
		return "", err
	}
	if err := t.own(parent); err != nil {
		return "", err
	}
	p := filepath.Join(parent, filepath.Base(dir))
	if err := os.Mkdir(p, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", p, err)
	}
	t.ours[p] = true
	return p, nil
}

// own makes dir writable without touching the host: a host directory is moved
// aside to a staging mount, a tmpfs goes over it, and its entries come back as binds.
func (t *tree) own(dir string) error {
	if t.ours[dir] {
		return nil
	}
	t.stage++
	stage := fmt.Sprintf("/.localcluster-stage-%d", t.stage)
	if err := os.Mkdir(stage, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", stage, err)
	}
	if err := syscall.Mount(dir, stage, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("staging %s: %w", dir, err)
	}
	if err := mirrorInto(dir, stage); err != nil {
		return err
	}
	if err := syscall.Unmount(stage, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("unstaging %s: %w", dir, err)
	}
	if err := os.Remove(stage); err != nil {
		return fmt.Errorf("removing %s: %w", stage, err)
	}
	t.ours[dir] = true
	return nil
}

// source is an opened mount source: its /proc/self/fd path and whether it is a directory.
type source struct {
	path string
	dir  bool
}

func (t *tree) bind(m Mount, src source) error {
	var target string
	var err error
	if src.dir {
		if target, err = t.ensureDir(m.Target); err != nil {
			return fmt.Errorf("mount path %s: %w", m.Target, err)
		}
	} else {
		parent, err := t.ensureDir(filepath.Dir(m.Target))
		if err != nil {
			return fmt.Errorf("mount path %s: %w", m.Target, err)
		}
		target = filepath.Join(parent, filepath.Base(m.Target))
		if _, err := os.Lstat(target); err != nil {
			if err := t.own(parent); err != nil {
				return err
			}
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				return fmt.Errorf("creating %s: %w", target, err)
			}
		}
	}
	if err := syscall.Mount(src.path, target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", m.Source, target, err)
	}
	if m.ReadOnly {
		if err := syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making %s read-only: %w", target, err)
		}
	}
	return nil
}
