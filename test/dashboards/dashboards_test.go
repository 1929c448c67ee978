package dashboards

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
)

// chartDashboard is the dashboard the chart ships.
func chartDashboard(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "charts", "annshard", "dashboards", "annindex.json")
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want string
	}{
		{`sum by (shard) (label_replace(rate(annshard_shard_requests_total{namespace="$namespace", pod=~"$index-shard-.*", route=~"search|search_batch"}[$__rate_interval]), "shard", "$1", "pod", ".*-shard-([0-9]+)-[0-9]+"))`,
			"[annshard_shard_requests_total]"},
		{`histogram_quantile(0.99, sum by (op, le) (rate(x_seconds_bucket{a="b"}[5m])))`, "[x_seconds_bucket]"},
		{`sum(rate(a_total[1m])) / clamp_min(sum(rate(a_total[1m])) + sum(rate(b_total[1m])), 1e-9)`, "[a_total b_total]"},
		{`clamp_min(deriv(max(c{x="y"})[2m:30s]), 0)`, "[c]"},
		{`up offset 5m and on (job) group_left (instance) other_metric > bool 2`, "[other_metric up]"},
		{`max by (pod) (m{label="has (parens) and {braces} and \"quotes\""})`, "[m]"},
		{`sum without (le) (rate(h_bucket[$__interval])) * 0x10 + Inf`, "[h_bucket]"},
	} {
		if got := fmt.Sprint(MetricNames(tc.expr)); got != tc.want {
			t.Errorf("MetricNames(%s) = %s, want %s", tc.expr, got, tc.want)
		}
	}
}

// Every query of the shipped dashboard names at least one metric, and every metric is
// an annshard, process or controller-runtime one (the e2e suite checks that the
// components really export each of them).
func TestChartDashboardParses(t *testing.T) {
	targets, err := Load(chartDashboard(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) < 20 {
		t.Fatalf("only %d queries in the dashboard", len(targets))
	}
	for _, tg := range targets {
		names := MetricNames(tg.Expr)
		if len(names) == 0 {
			t.Errorf("panel %q: no metric in %s", tg.Panel, tg.Expr)
		}
	}
	missing := Missing(targets, map[string]bool{})
	if len(missing) != len(panelsOf(targets)) {
		t.Fatalf("Missing with nothing exported names %d panels, want all %d", len(missing), len(panelsOf(targets)))
	}
}

func panelsOf(ts []Target) map[string]bool {
	out := map[string]bool{}
	for _, t := range ts {
		out[t.Panel] = true
	}
	return out
}
