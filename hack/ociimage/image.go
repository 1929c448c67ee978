package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// spec is one image to build: layers from tarballs, then one layer of files, and the config.
type spec struct {
	tags      []string
	layerTars []string // existing tar files, each one layer, bottom first
	files     *layer   // the top layer; skipped when empty
	config    v1.Config
	gzipLevel int
}

// build writes the image as a docker-save tarball at out (atomically: a temp file, then
// rename) and returns its digest.
func build(s *spec, out string) (v1.Hash, error) {
	if len(s.tags) == 0 {
		return v1.Hash{}, fmt.Errorf("at least one -tag is needed")
	}
	refs := map[name.Reference]v1.Image{}
	var tags []name.Tag
	for _, t := range s.tags {
		tag, err := name.NewTag(t)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("tag %q: %w", t, err)
		}
		tags = append(tags, tag)
	}

	tmpDir, err := os.MkdirTemp(filepath.Dir(out), ".ociimage-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmpDir)

	var adds []mutate.Addendum
	for _, p := range s.layerTars {
		l, err := tarball.LayerFromFile(p, tarball.WithCompressionLevel(s.gzipLevel))
		if err != nil {
			return v1.Hash{}, fmt.Errorf("layer %s: %w", p, err)
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "ociimage -layer-tar " + filepath.Base(p)}})
	}
	if s.files != nil && len(s.files.entries) > 0 {
		p := filepath.Join(tmpDir, "files.tar")
		if err := writeFileTar(s.files, p); err != nil {
			return v1.Hash{}, err
		}
		l, err := tarball.LayerFromFile(p, tarball.WithCompressionLevel(s.gzipLevel))
		if err != nil {
			return v1.Hash{}, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "ociimage files"}})
	}
	img, err := mutate.Append(empty.Image, adds...)
	if err != nil {
		return v1.Hash{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config = s.config
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, err
	}
	for _, tag := range tags {
		refs[tag] = img
	}
	tmpOut := filepath.Join(tmpDir, "image.tar")
	if err := tarball.MultiRefWriteToFile(tmpOut, refs); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", out, err)
	}
	if err := os.Rename(tmpOut, out); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

func writeFileTar(l *layer, p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := l.writeTar(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
