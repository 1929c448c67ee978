package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Target is one PromQL query of a panel.
type Target struct {
	Panel string
	Expr  string
}

// Load reads a dashboard JSON file and returns every query of every panel (rows' nested
// panels included) and of the template variables.
func Load(path string) ([]Target, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Target
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Target{Panel: p.Title, Expr: t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) == nil && strings.HasPrefix(q.Query, "label_values(") {
			// label_values(metric{...}, label): the metric is PromQL-like.
			inner := strings.TrimSuffix(strings.TrimPrefix(q.Query, "label_values("), ")")
			if i := strings.LastIndex(inner, ","); i > 0 {
				out = append(out, Target{Panel: "variable " + v.Name, Expr: inner[:i]})
			}
		}
	}
	return out, nil
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

var (
	grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	strLit     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	braces     = regexp.MustCompile(`\{[^{}]*\}`)
	brackets   = regexp.MustCompile(`\[[^\[\]]*\]`)
	grouping   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	token      = regexp.MustCompile(`(?:\d+(?:ms|s|m|h|d|w|y))+|0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?|[A-Za-z_:][A-Za-z0-9_:]*|\S`)
	ident      = regexp.MustCompile(`^[A-Za-z_:][A-Za-z0-9_:]*$`)
)

// keywords are PromQL words that are neither metrics nor followed by "(".
var keywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"Inf": true, "inf": true, "NaN": true, "nan": true, "start": true, "end": true}

// MetricNames returns the metric names a PromQL expression selects, sorted and unique:
// the identifiers that are not functions, aggregations, keywords, label names or
// durations. It is a lexer, not a parser, and it is enough for dashboard queries.
func MetricNames(expr string) []string {
	e := grafanaVar.ReplaceAllString(expr, "5m")
	e = strLit.ReplaceAllString(e, `""`)
	e = braces.ReplaceAllString(e, " ")
	for prev := ""; prev != e; {
		prev = e
		e = brackets.ReplaceAllString(e, " ")
		e = grouping.ReplaceAllString(e, " ")
	}
	toks := token.FindAllString(e, -1)
	var out []string
	for i, t := range toks {
		if !ident.MatchString(t) || keywords[t] {
			continue
		}
		if i+1 < len(toks) && toks[i+1] == "(" {
			continue // a function or an aggregation
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// Exposed returns the series names a scraped family of the given type produces:
// histograms and summaries expose _bucket/_sum/_count (and quantiles) besides their name.
func Exposed(family, typ string) []string {
	switch strings.ToLower(typ) {
	case "histogram", "gauge_histogram":
		return []string{family + "_bucket", family + "_sum", family + "_count"}
	case "summary":
		return []string{family, family + "_sum", family + "_count"}
	}
	return []string{family}
}

// Missing returns, per panel, the metric names its queries use that are not in exported.
func Missing(targets []Target, exported map[string]bool) map[string][]string {
	out := map[string][]string{}
	for _, t := range targets {
		for _, m := range MetricNames(t.Expr) {
			if !exported[m] && !slices.Contains(out[t.Panel], m) {
				out[t.Panel] = append(out[t.Panel], m)
			}
		}
	}
	return out
}
