package main

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/annshard/annshard/shardserver/balance"
)

// policyColours tell the policies apart in the bar chart (the tab10 palette).
var policyColours = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 148, G: 103, B: 189, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
}

func checkPlotPath(path string) error {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg", ".png", ".pdf":
		return nil
	}
	return fmt.Errorf("-plot %s: want a file ending in .svg, .png or .pdf", path)
}

// plotP99 draws the p99 latency of every policy in every scenario as grouped bars: one
// group per scenario, one bar per policy.
func plotP99(path string, scenarios []string, policies []balance.Policy, results map[string]map[balance.Policy]stats, o options) error {
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("p99 search latency per balancing policy\n3 shards x 3 replicas, open loop at %d QPS, median of %d rounds", o.qps, max(o.rounds, 1))
	pl.Y.Label.Text = "p99 latency (ms)"
	pl.Add(plotter.NewGrid())
	pl.Legend.Top = true
	w := vg.Points(14)
	top := 0.0
	for i, p := range policies {
		vals := make(plotter.Values, len(scenarios))
		for j, sc := range scenarios {
			vals[j] = results[sc][p].p99
			top = max(top, vals[j])
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = policyColours[i%len(policyColours)]
		bars.Offset = w * vg.Length(float64(i)-float64(len(policies)-1)/2)
		pl.Add(bars)
		pl.Legend.Add(string(p), bars)
	}
	pl.NominalX(scenarios...)
	// Headroom above the tallest bar for the legend, which sits inside the plot.
	pl.Y.Min, pl.Y.Max = 0, top*1.45
	return pl.Save(vg.Length(max(8, 1.8*float64(len(scenarios))))*vg.Inch, 5*vg.Inch, path)
}
