package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// plotReporter passes every result on to the next reporter and keeps what the recall-QPS
// picture needs; write draws it once the run is over.
type plotReporter struct {
	next   reporter
	info   datasetInfo
	efs    []efReport
	bruteR bruteReport
}

func (p *plotReporter) dataset(info datasetInfo, c *config) error {
	p.info = info
	return p.next.dataset(info, c)
}

func (p *plotReporter) build(b buildReport, c *config) error { return p.next.build(b, c) }

func (p *plotReporter) ef(r efReport, brute bruteReport, c *config) error {
	p.efs = append(p.efs, r)
	return p.next.ef(r, brute, c)
}

func (p *plotReporter) partition(r partitionReport, c *config) error { return p.next.partition(r, c) }

func (p *plotReporter) brute(b bruteReport, c *config) error {
	p.bruteR = b
	return p.next.brute(b, c)
}

// plotFormats are the extensions -plot accepts (gonum/plot picks the format by them).
var plotFormats = []string{".svg", ".png", ".pdf"}

func checkPlotPath(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	for _, f := range plotFormats {
		if ext == f {
			return nil
		}
	}
	return fmt.Errorf("-plot %s: want a file ending in %s", path, strings.Join(plotFormats, ", "))
}

// write draws the recall-QPS curve of the ef sweep, on one thread and on all, against the
// brute-force scan's QPS (recall 1 by definition), with a log QPS axis.
func (p *plotReporter) write(path string, c *config) error {
	if len(p.efs) == 0 {
		return fmt.Errorf("-plot: no ef results to draw")
	}
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("HNSW recall@%d vs queries per second\n%s; %d vectors of dimension %d, M=%d, efConstruction=%d",
		c.k, p.info.source, p.info.n, p.info.dim, c.m, c.efc)
	pl.X.Label.Text = fmt.Sprintf("recall@%d", c.k)
	pl.Y.Label.Text = "queries per second (log scale)"
	pl.Y.Scale = plot.LogScale{}
	pl.Y.Tick.Marker = logTicks125{}
	pl.Add(plotter.NewGrid())
	// High recall costs QPS, so the curve falls to the right: the top right is free.
	pl.Legend.Top = true

	one, all := make(plotter.XYs, len(p.efs)), make(plotter.XYs, len(p.efs))
	labels := make([]string, len(p.efs))
	minRecall := 1.0
	for i, r := range p.efs {
		one[i] = plotter.XY{X: r.Recall, Y: r.QPS1}
		all[i] = plotter.XY{X: r.Recall, Y: r.QPSAll}
		labels[i] = fmt.Sprintf("ef=%d", r.Ef)
		minRecall = math.Min(minRecall, r.Recall)
	}
	blue, orange, grey := color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255}, color.RGBA{R: 90, G: 90, B: 90, A: 255}
	for _, s := range []struct {
		xys   plotter.XYs
		col   color.Color
		name  string
		shape draw.GlyphDrawer
	}{
		{one, blue, "HNSW, 1 thread", draw.CircleGlyph{}},
		{all, orange, fmt.Sprintf("HNSW, %d threads", c.threads), draw.TriangleGlyph{}},
	} {
		line, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return err
		}
		line.Color, line.Width = s.col, vg.Points(1.5)
		pts.Color, pts.Shape, pts.Radius = s.col, s.shape, vg.Points(3)
		pl.Add(line, pts)
		pl.Legend.Add(s.name, line, pts)
	}
	lbl, err := plotter.NewLabels(plotter.XYLabels{XYs: one, Labels: labels})
	if err != nil {
		return err
	}
	for i := range lbl.TextStyle {
		lbl.TextStyle[i].Font.Size = vg.Points(8)
		lbl.TextStyle[i].YAlign = draw.YBottom
	}
	lbl.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(3)}
	pl.Add(lbl)

	if p.bruteR.QPS1 > 0 {
		lo := math.Max(0, minRecall-0.02)
		bl, err := plotter.NewLine(plotter.XYs{{X: lo, Y: p.bruteR.QPS1}, {X: 1, Y: p.bruteR.QPS1}})
		if err != nil {
			return err
		}
		bl.Color, bl.Width, bl.Dashes = grey, vg.Points(1.5), []vg.Length{vg.Points(5), vg.Points(3)}
		pl.Add(bl)
		pl.Legend.Add("brute force (exact), 1 thread", bl)
	}
	pl.X.Max = 1.0
	return pl.Save(9*vg.Inch, 5.5*vg.Inch, path)
}

// logTicks125 labels a log axis at 1, 2 and 5 times each power of ten: a QPS range often
// spans less than a decade, where plot.LogTicks would label one tick or none.
type logTicks125 struct{}

func (logTicks125) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		for _, m := range []float64{1, 2, 3, 4, 5, 6, 7, 8, 9} {
			v := m * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'f', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
