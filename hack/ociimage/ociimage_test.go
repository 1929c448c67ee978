package main

import (
	"archive/tar"
	"debug/elf"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// A root filesystem shaped like Debian's merged /usr with an alternatives link.
func fakeRoot(t *testing.T) rootFS {
	root := t.TempDir()
	write(t, filepath.Join(root, "usr/lib/x86_64-linux-gnu/libfoo.so.1.2"), "lib", 0o644)
	symlink(t, "libfoo.so.1.2", filepath.Join(root, "usr/lib/x86_64-linux-gnu/libfoo.so.1"))
	symlink(t, "usr/lib", filepath.Join(root, "lib"))
	write(t, filepath.Join(root, "usr/sbin/tool-nft"), "#!/bin/sh\n", 0o755)
	symlink(t, "/etc/alternatives/tool", filepath.Join(root, "usr/sbin/tool"))
	symlink(t, "/usr/sbin/tool-nft", filepath.Join(root, "etc/alternatives/tool"))
	symlink(t, "b", filepath.Join(root, "loop/a"))
	symlink(t, "a", filepath.Join(root, "loop/b"))
	symlink(t, "../../../../../etc", filepath.Join(root, "usr/escape"))
	return rootFS{root: root}
}

func TestResolve(t *testing.T) {
	r := fakeRoot(t)
	for _, tc := range []struct {
		in, want string
		links    []string
	}{
		{"/lib/x86_64-linux-gnu/libfoo.so.1", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2",
			[]string{"/lib", "/usr/lib/x86_64-linux-gnu/libfoo.so.1"}},
		{"/usr/sbin/tool", "/usr/sbin/tool-nft", []string{"/usr/sbin/tool", "/etc/alternatives/tool"}},
		{"/usr/lib/../sbin/./tool-nft", "/usr/sbin/tool-nft", nil},
		// ".." at the root stays at the root, as in a chroot: nothing escapes to the host.
		{"/usr/escape/alternatives/tool", "/usr/sbin/tool-nft", []string{"/usr/escape", "/etc/alternatives/tool"}},
	} {
		got, links, err := r.resolve(tc.in)
		if err != nil {
			t.Fatalf("resolve(%s): %v", tc.in, err)
		}
		var paths []string
		for _, l := range links {
			paths = append(paths, l.path)
		}
		if got != tc.want || strings.Join(paths, " ") != strings.Join(tc.links, " ") {
			t.Errorf("resolve(%s) = %s via %v, want %s via %v", tc.in, got, paths, tc.want, tc.links)
		}
	}
	if _, _, err := r.resolve("/loop/a"); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("resolving a link loop: err = %v, want too many levels", err)
	}
	if _, _, err := r.resolve("/usr/missing"); err == nil {
		t.Error("resolving a missing path succeeded")
	}
}

// The closure of a real dynamically linked program of this machine holds its interpreter
// and libc, through the links Debian has on the way.
func TestClosureOfHostProgram(t *testing.T) {
	const prog = "/bin/ls"
	f, err := elf.Open(prog)
	if err != nil {
		t.Skipf("%s is not an ELF file here: %v", prog, err)
	}
	libs, _ := f.ImportedLibraries()
	f.Close()
	if len(libs) == 0 {
		t.Skipf("%s is statically linked here", prog)
	}
	r := rootFS{root: "/"}
	c := &closure{files: map[string]bool{}, links: map[string]string{}}
	if err := r.addProgram(c, prog); err != nil {
		t.Fatal(err)
	}
	var haveLibc, haveLoader bool
	for p := range c.files {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("closure file %s: %v", p, err)
		}
		haveLibc = haveLibc || strings.HasPrefix(filepath.Base(p), "libc.so")
		haveLoader = haveLoader || strings.HasPrefix(filepath.Base(p), "ld-linux")
	}
	if !haveLibc || !haveLoader {
		t.Errorf("closure of %s lacks libc (%v) or the loader (%v): %v", prog, haveLibc, haveLoader, c.files)
	}
}

func TestLayerRules(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a", 0o755)
	write(t, filepath.Join(dir, "b"), "b", 0o644)
	l := newLayer()
	if err := l.addFile("/bin/app", filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if err := l.addFile("/bin/app", filepath.Join(dir, "b")); err == nil {
		t.Error("adding another file at the same path succeeded")
	}
	if err := l.addDir("/tmp", 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := l.addDir("/tmp", 0o1777); err != nil {
		t.Errorf("adding the same directory twice: %v", err)
	}
	if err := l.addSymlink("/lib", "usr/lib"); err != nil {
		t.Fatal(err)
	}
	if err := l.addFile("/lib/x", filepath.Join(dir, "b")); err == nil {
		t.Error("adding a file under a symlink succeeded (it would shadow the link in the image)")
	}
	if err := l.addFile("/", filepath.Join(dir, "b")); err == nil {
		t.Error("adding / succeeded")
	}
	if err := l.addFile("/x", dir); err == nil {
		t.Error("adding a directory as a file succeeded")
	}
}

type tarEntry struct {
	typ             byte
	mode            int64
	uid, gid        int
	linkname, body  string
	modTimeUnixSecs int64
}

func readImage(t *testing.T, path, tag string) map[string]tarEntry {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &ref)
	if err != nil {
		t.Fatalf("reading %s as %s: %v", path, tag, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]tarEntry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(tr)
			out[h.Name] = tarEntry{h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, string(body), h.ModTime.Unix()}
		}
		rc.Close()
	}
	return out
}

func TestBuildImage(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "app"), "#!binary", 0o755)
	write(t, filepath.Join(dir, "passwd"), "nonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n", 0o644)
	base := filepath.Join(dir, "base.tar")
	{
		f, err := os.Create(base)
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(f)
		_ = tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
		_ = tw.WriteHeader(&tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4, Uid: 7})
		_, _ = tw.Write([]byte("base"))
		_ = tw.Close()
		_ = f.Close()
	}
	out := filepath.Join(dir, "img.tar")
	args := []string{"-o", out, "-tag", "annshard/app:e2e", "-tag", "registry.k8s.io/app:v1",
		"-layer-tar", base, "-file", "/usr/local/bin/app=" + filepath.Join(dir, "app"),
		"-file", "/etc/passwd=" + filepath.Join(dir, "passwd"), "-dir", "/tmp:1777", "-dir", "/data",
		"-symlink", "/bin/app=../usr/local/bin/app", "-entrypoint", `["/usr/local/bin/app","serve"]`,
		"-cmd", `["--port","8080"]`, "-user", "65532:65532", "-env", "PATH=/usr/local/bin", "-workdir", "/data",
		"-stop-signal", "SIGRTMIN+3", "-label", "org.opencontainers.image.source=annshard"}
	if err := run(args); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"annshard/app:e2e", "registry.k8s.io/app:v1"} {
		entries := readImage(t, out, tag)
		want := map[string]tarEntry{
			"etc/":              {typ: tar.TypeDir, mode: 0o755},
			"etc/os-release":    {typ: tar.TypeReg, mode: 0o644, uid: 7, body: "base"},
			"etc/passwd":        {typ: tar.TypeReg, mode: 0o644, body: "nonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n"},
			"usr/":              {typ: tar.TypeDir, mode: 0o755},
			"usr/local/":        {typ: tar.TypeDir, mode: 0o755},
			"usr/local/bin/":    {typ: tar.TypeDir, mode: 0o755},
			"usr/local/bin/app": {typ: tar.TypeReg, mode: 0o755, body: "#!binary"},
			"bin/":              {typ: tar.TypeDir, mode: 0o755},
			"bin/app":           {typ: tar.TypeSymlink, mode: 0o777, linkname: "../usr/local/bin/app"},
			"tmp/":              {typ: tar.TypeDir, mode: 0o1777},
			"data/":             {typ: tar.TypeDir, mode: 0o755},
		}
		for p, w := range want {
			got, ok := entries[p]
			got.modTimeUnixSecs = 0
			if !ok || got != w {
				t.Errorf("%s: entry %s = %+v (present %v), want %+v", tag, p, got, ok, w)
			}
		}
		if len(entries) != len(want) {
			t.Errorf("%s: %d entries, want %d: %v", tag, len(entries), len(want), entries)
		}
		for p, e := range entries {
			if p != "etc/" && p != "etc/os-release" && e.modTimeUnixSecs != 0 {
				t.Errorf("%s is dated %d, want the epoch", p, e.modTimeUnixSecs)
			}
		}
	}
	ref, _ := name.NewTag("annshard/app:e2e")
	img, err := tarball.ImageFromPath(out, &ref)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH || strings.Join(c.Entrypoint, " ") != "/usr/local/bin/app serve" ||
		strings.Join(c.Cmd, " ") != "--port 8080" || c.User != "65532:65532" || c.WorkingDir != "/data" ||
		c.StopSignal != "SIGRTMIN+3" || strings.Join(c.Env, " ") != "PATH=/usr/local/bin" ||
		c.Labels["org.opencontainers.image.source"] != "annshard" || !cf.Created.Time.Equal(epoch) {
		t.Errorf("config = %+v (os %s arch %s created %v)", c, cf.OS, cf.Architecture, cf.Created)
	}

	// The same inputs give the same digest; one changed byte gives another.
	d1, _ := img.Digest()
	out2 := filepath.Join(dir, "img2.tar")
	args[1] = out2
	if err := run(args); err != nil {
		t.Fatal(err)
	}
	img2, _ := tarball.ImageFromPath(out2, &ref)
	if d2, _ := img2.Digest(); d2 != d1 {
		t.Errorf("rebuilding the same inputs gave digest %s, then %s", d1, d2)
	}
	write(t, filepath.Join(dir, "app"), "#!binarY", 0o755)
	if err := run(args); err != nil {
		t.Fatal(err)
	}
	img3, _ := tarball.ImageFromPath(out2, &ref)
	if d3, _ := img3.Digest(); d3 == d1 {
		t.Error("changing a file kept the digest")
	}
}

func TestBuildClosureImage(t *testing.T) {
	r := fakeRoot(t)
	out := filepath.Join(t.TempDir(), "img.tar")
	if err := run([]string{"-o", out, "-tag", "x/y:z", "-rootfs", r.root, "-closure", "/usr/sbin/tool"}); err != nil {
		t.Fatal(err)
	}
	entries := readImage(t, out, "x/y:z")
	for p, w := range map[string]tarEntry{
		"usr/sbin/tool":         {typ: tar.TypeSymlink, mode: 0o777, linkname: "/etc/alternatives/tool"},
		"etc/alternatives/tool": {typ: tar.TypeSymlink, mode: 0o777, linkname: "/usr/sbin/tool-nft"},
		"usr/sbin/tool-nft":     {typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
	} {
		if got := entries[p]; got != w {
			t.Errorf("entry %s = %+v, want %+v", p, got, w)
		}
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-tag", "a/b:c"},                   // no -o
		{"-o", filepath.Join(dir, "x.tar")}, // no tag
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "a/b:c", "-file", "nodst"},
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "a/b:c", "-dir", "/tmp:99"},
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "a/b:c", "-entrypoint", "/bin/app"},
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "a/b:c", "-env", "NOVALUE"},
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "a/b:c", "-closure", "/bin/ls"},
		{"-o", filepath.Join(dir, "x.tar"), "-tag", "Not A Tag"},
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.tar")); !os.IsNotExist(err) {
		t.Errorf("a failed run left its output behind: %v", err)
	}
}
