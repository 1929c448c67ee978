package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/annshard/annshard/cmd/kubectl-annshard/vecfile"
	"github.com/annshard/annshard/shardserver/client"
)

type searchOptions struct {
	vector    string
	id        string
	file      string
	rows      string
	k, ef     int
	partition string
	output    string
	timeout   time.Duration
	vecOpts   vecfile.Options
}

func newSearchCmd(g *globalOptions) *cobra.Command {
	o := &searchOptions{}
	c := &cobra.Command{
		Use:   "search INDEX (--vector V | --id ID | --file F)",
		Short: "Find the k nearest neighbours of a vector, an id or the vectors of a file",
		Long: `search sends k-nearest-neighbour queries through the index's router and prints the results,
nearest first, with their distances (squared L2, or 1 - cosine similarity / inner product).

The query is one of:
  --vector  the components, comma- or space-separated ("0.1,0.2,0.3" or "[0.1, 0.2, 0.3]")
  --id      a stored vector, looked up by id (with --partition if it was stored in one)
  --file    the rows of a vector file (any format import reads); --rows picks some, default 0`,
		Example: `  kubectl annshard search products --vector 0.12,0.5,-0.3,0.9 -k 5
  kubectl annshard search products --id 42
  kubectl annshard search products --file queries.fvecs --rows 0-9 -k 10 -o json`,
		Args: exactArgs(1, "the index name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSearch(cmd.Context(), g, o, args[0])
		},
	}
	f := c.Flags()
	f.StringVar(&o.vector, "vector", "", "query vector: comma- or space-separated numbers")
	f.StringVar(&o.id, "id", "", "query with the stored vector of this id")
	f.StringVar(&o.file, "file", "", "query with rows of this vector file (.fvecs .bvecs .npy .jsonl .parquet)")
	f.StringVar(&o.rows, "rows", "0", "rows of --file to query with: N, N-M, or all")
	f.IntVarP(&o.k, "k", "k", 10, "neighbours to return")
	f.IntVar(&o.ef, "ef", 0, "HNSW ef of the search (0: the index's efSearch); higher is more exact and slower")
	f.StringVar(&o.partition, "partition", "", "search only this partition (and look --id up in it)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up on a query after this long")
	f.StringVar(&o.vecOpts.VectorColumn, "vector-column", "", "vector column of a --file in JSON Lines or Parquet")
	f.StringVar(&o.vecOpts.Format, "format", "", "format of --file when its extension does not say: "+vecfile.Formats)
	outputFlag(c, &o.output)
	return c
}

// searchResult is one query's answer, as printed and as -o json|yaml.
type searchResult struct {
	Query   string       `json:"query"`
	Results []client.Hit `json:"results"`
	Partial bool         `json:"partial,omitempty"`
	Missing []int        `json:"missingShards,omitempty"`
}

func runSearch(ctx context.Context, g *globalOptions, o *searchOptions, index string) error {
	if err := checkOutput(o.output); err != nil {
		return err
	}
	given := 0
	for _, s := range []string{o.vector, o.id, o.file} {
		if s != "" {
			given++
		}
	}
	if given != 1 {
		return codef(exitUsage, "give exactly one of --vector, --id and --file")
	}
	if o.k < 1 {
		return codef(exitUsage, "-k must be at least 1")
	}
	type query struct {
		name string
		vec  []float32
	}
	var queries []query
	switch {
	case o.vector != "":
		v, err := parseVector(o.vector)
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("--vector: %w", err))
		}
		queries = append(queries, query{"vector", v})
	case o.file != "":
		recs, err := readRows(o.file, o.rows, o.vecOpts)
		if err != nil {
			return err
		}
		for _, r := range recs {
			queries = append(queries, query{fmt.Sprintf("%s row %d", o.file, r.Row), r.Vector})
		}
	}

	s, err := newSession(g)
	if err != nil {
		return err
	}
	idx, err := s.index(ctx, index)
	if err != nil {
		return err
	}
	pool, err := s.routers(ctx, index, "")
	if err != nil {
		return err
	}
	if o.id != "" {
		qctx, cancel := context.WithTimeout(ctx, o.timeout)
		v, err := pool.pick().Get(qctx, o.id, o.partition)
		cancel()
		if client.IsCode(err, client.CodeNotFound) {
			return codef(exitNotFound, "no vector with id %q in %s/%s%s", o.id, s.ns, index, inPartition(o.partition))
		}
		if err != nil {
			return fmt.Errorf("looking up id %q: %w", o.id, err)
		}
		vec := v.Vector
		if len(vec) == 0 && v.VectorB64 != "" {
			if vec, err = client.DecodeB64(v.VectorB64, 0); err != nil {
				return fmt.Errorf("looking up id %q: %w", o.id, err)
			}
		}
		queries = append(queries, query{"id " + o.id, vec})
	}
	for _, q := range queries {
		if len(q.vec) != int(idx.Spec.Dimension) {
			return codef(exitBadInput, "%s has dimension %d, index %s has %d", q.name, len(q.vec), index, idx.Spec.Dimension)
		}
	}

	var results []searchResult
	for _, q := range queries {
		qctx, cancel := context.WithTimeout(ctx, o.timeout)
		resp, err := pool.pick().Search(qctx, &client.SearchRequest{Vector: q.vec, K: o.k, Ef: o.ef, Partition: o.partition})
		cancel()
		if err != nil {
			return fmt.Errorf("searching with %s: %w", q.name, err)
		}
		results = append(results, searchResult{Query: q.name, Results: resp.Results, Partial: resp.Partial, Missing: resp.MissingShards})
	}
	if o.output != "" {
		if len(results) == 1 {
			return printData(g.streams.Out, o.output, results[0])
		}
		return printData(g.streams.Out, o.output, results)
	}
	return printResults(g.streams.Out, results)
}

func inPartition(p string) string {
	if p == "" {
		return ""
	}
	return " (partition " + strconv.Quote(p) + ")"
}

func printResults(w io.Writer, results []searchResult) error {
	for i, r := range results {
		if len(results) > 1 || i > 0 {
			if i > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "query: %s\n", r.Query)
		}
		if len(r.Results) == 0 {
			fmt.Fprintln(w, "no results (the index, or the partition, is empty)")
			continue
		}
		t := newTable(w, "RANK", "ID", "DISTANCE", "PARTITION")
		for j, h := range r.Results {
			t.row(j+1, h.ID, strconv.FormatFloat(float64(h.Distance), 'g', 6, 32), h.Partition)
		}
		if err := t.flush(); err != nil {
			return err
		}
		if r.Partial {
			fmt.Fprintf(w, "partial answer: shards %v did not answer\n", r.Missing)
		}
	}
	return nil
}

// parseVector reads "0.1,0.2", "0.1 0.2" or "[0.1, 0.2]".
func parseVector(s string) ([]float32, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, errors.New("no components")
	}
	out := make([]float32, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseFloat(f, 32)
		if err != nil {
			return nil, fmt.Errorf("component %d: %q is not a number", i, f)
		}
		out[i] = float32(v)
	}
	return out, nil
}

// readRows reads the rows of a file that spec names: "N", "N-M" or "all".
func readRows(path, spec string, opt vecfile.Options) ([]vecfile.Record, error) {
	lo, hi := int64(0), int64(-1)
	switch {
	case spec == "all":
		lo, hi = 0, 1<<62
	case strings.Contains(spec, "-"):
		a, b, _ := strings.Cut(spec, "-")
		var err1, err2 error
		lo, err1 = strconv.ParseInt(a, 10, 64)
		hi, err2 = strconv.ParseInt(b, 10, 64)
		if err1 != nil || err2 != nil || lo < 0 || hi < lo {
			return nil, codef(exitUsage, "--rows %q: want N, N-M or all", spec)
		}
	default:
		n, err := strconv.ParseInt(spec, 10, 64)
		if err != nil || n < 0 {
			return nil, codef(exitUsage, "--rows %q: want N, N-M or all", spec)
		}
		lo, hi = n, n
	}
	if hi-lo >= 10000 {
		hi = lo + 9999 // a query file, not a dataset: bound what one command sends
	}
	r, err := vecfile.Open(path, opt)
	if err != nil {
		return nil, withCode(exitBadInput, err)
	}
	defer r.Close()
	var out []vecfile.Record
	for {
		var rec vecfile.Record
		err := r.Next(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			if rec.Row >= lo && rec.Row <= hi || !vecfile.IsRowError(err) {
				return nil, codef(exitBadInput, "%s: %v", path, err)
			}
			continue
		}
		if rec.Row < lo {
			continue
		}
		if rec.Row > hi {
			break
		}
		rec.Vector = append([]float32(nil), rec.Vector...)
		out = append(out, rec)
	}
	if len(out) == 0 {
		return nil, codef(exitBadInput, "%s has no row %s", path, spec)
	}
	return out, nil
}
