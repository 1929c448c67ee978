package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/liggitt/tabwriter"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// outputFlag adds -o/--output to a command whose result is data.
func outputFlag(c *cobra.Command, out *string) {
	c.Flags().StringVarP(out, "output", "o", "", "output format: json or yaml (default: tables for people)")
}

func checkOutput(out string) error {
	switch out {
	case "", "json", "yaml":
		return nil
	}
	return codef(exitUsage, "--output must be json or yaml, not %q", out)
}

// printData writes v as JSON or YAML.
func printData(w io.Writer, format string, v any) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("unknown output format %q", format)
}

// style colours table cells, only when the output is a terminal and NO_COLOR is unset.
// Every cell of a coloured column gets an escape sequence of the same length, so that
// tabwriter, which counts bytes, still aligns the columns.
type style struct{ on bool }

func newStyle(w io.Writer) style {
	return style{on: isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

const (
	colGreen  = "\x1b[32m"
	colYellow = "\x1b[33m"
	colRed    = "\x1b[31m"
	colPlain  = "\x1b[39m" // the default colour: same length as the others
	colReset  = "\x1b[0m"
)

func (s style) paint(colour, text string) string {
	if !s.on {
		return text
	}
	return colour + text + colReset
}

// table is a kubectl-style table: upper-case headers, columns separated by spaces.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: printers.GetNewTabWriter(w)}
	fmt.Fprintln(t.tw, strings.Join(headers, "\t"))
	return t
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// Formatting of figures in tables.

func fmtQPS(q float64) string {
	switch {
	case q == 0:
		return "0"
	case q < 10:
		return fmt.Sprintf("%.1f", q)
	}
	return fmt.Sprintf("%.0f", q)
}

func fmtMillis(ms float64) string {
	switch {
	case ms == 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 100:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.0fms", ms)
}

func fmtCount(n int64) string {
	switch {
	case n < 10_000:
		return fmt.Sprint(n)
	case n < 10_000_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1fM", float64(n)/1e6)
}

func fmtBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0fB", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", b/div, "KMGTPE"[exp])
}
