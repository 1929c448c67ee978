package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestPlotWritesSVGAndPNG(t *testing.T) {
	p := &plotReporter{info: datasetInfo{source: "test", n: 100, dim: 8},
		efs:    []efReport{{Ef: 10, Recall: 0.9, QPS1: 9000, QPSAll: 15000}, {Ef: 40, Recall: 0.99, QPS1: 4000, QPSAll: 7000}},
		bruteR: bruteReport{QPS1: 800}}
	c := &config{k: 10, m: 16, efc: 100, threads: 2}
	dir := t.TempDir()
	for ext, magic := range map[string][]byte{".svg": []byte("<svg"), ".png": []byte("\x89PNG")} {
		path := filepath.Join(dir, "curve"+ext)
		if err := p.write(path, c); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(raw[:min(len(raw), 512)], magic) {
			t.Fatalf("%s: %v, starts %q", ext, err, raw[:min(len(raw), 16)])
		}
	}
	if err := checkPlotPath("x.jpg"); err == nil {
		t.Fatal("-plot x.jpg accepted")
	}
	if err := (&plotReporter{}).write(filepath.Join(dir, "empty.png"), c); err == nil {
		t.Fatal("a plot without results was drawn")
	}
}
