package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/annshard/annshard/shardserver/client"
)

func newTopCmd(g *globalOptions) *cobra.Command {
	var (
		output   string
		watch    bool
		interval time.Duration
	)
	c := &cobra.Command{
		Use:   "top INDEX",
		Short: "Per-pod load of an index: role, QPS, latency, CPU, memory, WAL position, lag",
		Long: `top shows one row per shard and router pod of an index: its role (primary, replica, router), queries
per second, p50 and p99 latency, CPU (cores, like kubectl top: 250m is a quarter of a core),
resident memory, the last applied WAL sequence number and the replication lag in records.

Figures are measured live over --interval: shard QPS and latency come from each shard's load
report (QPS over the last 10 seconds, latency over its recent queries); router QPS and latency,
and every pod's CPU, from two scrapes of its /metrics --interval apart. With --watch the table is
redrawn every --interval until interrupted.`,
		Example: `  kubectl annshard top products
  kubectl annshard top products --watch --interval 5s
  kubectl annshard top products -o json`,
		Args: exactArgs(1, "the index name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if interval < 200*time.Millisecond {
				return codef(exitUsage, "--interval must be at least 200ms")
			}
			s, err := newSession(g)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if _, err := s.index(ctx, args[0]); err != nil {
				return err
			}
			w := g.streams.Out
			redraw := watch && output == "" && isTerminal(w)
			for {
				rows, err := sampleTop(ctx, s, args[0], interval)
				if err != nil {
					return err
				}
				if ctx.Err() != nil {
					return nil
				}
				if output != "" {
					if err := printData(w, output, rows); err != nil {
						return err
					}
				} else {
					var buf bytes.Buffer
					if watch {
						fmt.Fprintf(&buf, "%s  %s/%s  (every %v; Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly), s.ns, args[0], interval)
					}
					if err := printTop(&buf, rows); err != nil {
						return err
					}
					if redraw {
						io.WriteString(w, "\x1b[H\x1b[2J") // home, clear screen
					} else if watch {
						fmt.Fprintln(w)
					}
					if _, err := w.Write(buf.Bytes()); err != nil {
						return err
					}
				}
				if !watch {
					return nil
				}
			}
		},
	}
	outputFlag(c, &output)
	c.Flags().BoolVarP(&watch, "watch", "w", false, "refresh every --interval until interrupted")
	c.Flags().DurationVar(&interval, "interval", 2*time.Second, "how long each sample measures rates over (and the refresh period with --watch)")
	return c
}

// topRow is one pod in `top`; missing figures are nil (JSON null, "-" in the table).
type topRow struct {
	Pod         string   `json:"pod"`
	Role        string   `json:"role"`
	Shard       string   `json:"shard,omitempty"`
	Ready       bool     `json:"ready"`
	QPS         *float64 `json:"qps"`
	P50Millis   *float64 `json:"p50Millis"`
	P99Millis   *float64 `json:"p99Millis"`
	CPUCores    *float64 `json:"cpuCores"`
	MemoryBytes *float64 `json:"memoryBytes"`
	WALSeq      *uint64  `json:"walSeq,omitempty"`
	LagRecords  *uint64  `json:"replicationLagRecords,omitempty"`
	Vectors     *int     `json:"vectors,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// sampleTop measures every pod of the index over interval.
func sampleTop(ctx context.Context, s *session, index string, interval time.Duration) ([]topRow, error) {
	shards, err := s.podsOf(ctx, index, "shard")
	if err != nil {
		return nil, err
	}
	routers, err := s.podsOf(ctx, index, "router")
	if err != nil {
		return nil, err
	}
	pods := append(slices.Clone(shards), routers...)
	conns, errs := s.podClients(ctx, pods)

	first := scrapeAll(ctx, conns)
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return nil, nil
	case <-time.After(interval):
	}
	second := scrapeAll(ctx, conns)
	dt := time.Since(t0).Seconds()

	var rows []topRow
	for _, p := range pods {
		row := topRow{Pod: p.Name, Role: p.Labels["app.kubernetes.io/component"], Shard: p.Labels["annshard.io/shard"], Ready: podReady(&p)}
		if err, bad := errs[p.Name]; bad {
			row.Error = err.Error()
			rows = append(rows, row)
			continue
		}
		a, b := first[p.Name], second[p.Name]
		if b.err != nil || a.err != nil {
			row.Error = firstErr(a.err, b.err)
			rows = append(rows, row)
			continue
		}
		row.CPUCores = rate(a.metrics, b.metrics, "process_cpu_seconds_total", nil, dt)
		row.MemoryBytes = gaugeValue(b.metrics, "process_resident_memory_bytes")
		if row.Role == "router" {
			row.Shard = ""
			search := func(l map[string]string) bool { return strings.HasPrefix(l["op"], "search") }
			row.QPS = rate(a.metrics, b.metrics, "annshard_router_requests_total", search, dt)
			row.P50Millis = histQuantile(a.metrics, b.metrics, "annshard_router_request_duration_seconds", search, 0.50)
			row.P99Millis = histQuantile(a.metrics, b.metrics, "annshard_router_request_duration_seconds", search, 0.99)
		} else if l := b.load; l != nil {
			row.Role = l.Role
			row.QPS, row.P50Millis, row.P99Millis = &l.QPS10s, &l.LatencyP50Ms, &l.LatencyP99Ms
			row.WALSeq, row.LagRecords, row.Vectors = &l.WALSeq, &l.ReplicationLagRecords, &l.Vectors
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func firstErr(errs ...error) string {
	for _, e := range errs {
		if e != nil {
			return e.Error()
		}
	}
	return ""
}

type podSample struct {
	metrics map[string]*dto.MetricFamily
	load    *client.LoadReport
	err     error
}

// scrapeAll reads /metrics of every pod, and /v1/load of the shard pods, in parallel.
func scrapeAll(ctx context.Context, conns map[string]*podConn) map[string]podSample {
	out := map[string]podSample{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, c := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var smp podSample
			body, err := c.get(ctx, "/metrics")
			if err == nil {
				p := expfmt.NewTextParser(model.UTF8Validation)
				smp.metrics, err = p.TextToMetricFamilies(bytes.NewReader(body))
			}
			if err == nil {
				if _, isShard := smp.metrics["annshard_shard_vectors"]; isShard {
					smp.load, err = c.api.Load(ctx)
				}
			}
			smp.err = err
			mu.Lock()
			out[name] = smp
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// sumOf adds the counter or gauge values of family name whose labels pass keep.
func sumOf(fams map[string]*dto.MetricFamily, name string, keep func(map[string]string) bool) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var sum float64
	for _, m := range f.GetMetric() {
		if keep != nil && !keep(labelsOf(m)) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum, true
}

// rate is the per-second increase of a counter between two scrapes dt seconds apart.
func rate(a, b map[string]*dto.MetricFamily, name string, keep func(map[string]string) bool, dt float64) *float64 {
	va, okA := sumOf(a, name, keep)
	vb, okB := sumOf(b, name, keep)
	if !okB || dt <= 0 {
		return nil
	}
	if !okA {
		va = 0 // the series appeared between the scrapes
	}
	r := max(0, vb-va) / dt
	return &r
}

func gaugeValue(fams map[string]*dto.MetricFamily, name string) *float64 {
	v, ok := sumOf(fams, name, nil)
	if !ok {
		return nil
	}
	return &v
}

// histQuantile estimates quantile q (in ms) of the observations a histogram received
// between two scrapes, interpolating linearly within the bucket as Prometheus'
// histogram_quantile does; nil when there were none.
func histQuantile(a, b map[string]*dto.MetricFamily, name string, keep func(map[string]string) bool, q float64) *float64 {
	buckets := func(fams map[string]*dto.MetricFamily) map[float64]float64 {
		out := map[float64]float64{}
		f, ok := fams[name]
		if !ok {
			return out
		}
		for _, m := range f.GetMetric() {
			if keep != nil && !keep(labelsOf(m)) || m.Histogram == nil {
				continue
			}
			for _, bk := range m.GetHistogram().GetBucket() {
				out[bk.GetUpperBound()] += float64(bk.GetCumulativeCount())
			}
			out[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
		}
		return out
	}
	ba, bb := buckets(a), buckets(b)
	var bounds []float64
	for ub := range bb {
		bounds = append(bounds, ub)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return nil
	}
	total := bb[math.Inf(1)] - ba[math.Inf(1)]
	if total <= 0 {
		return nil
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, ub := range bounds {
		c := bb[ub] - ba[ub]
		if c >= rank {
			if math.IsInf(ub, 1) {
				v := prevBound * 1000 // above the last bucket: its lower bound, as Prometheus does
				return &v
			}
			v := (prevBound + (ub-prevBound)*(rank-prevCount)/max(c-prevCount, 1e-12)) * 1000
			return &v
		}
		prevBound, prevCount = ub, c
	}
	return nil
}

func printTop(w io.Writer, rows []topRow) error {
	t := newTable(w, "POD", "ROLE", "SHARD", "READY", "QPS", "P50", "P99", "CPU", "MEMORY", "VECTORS", "WAL SEQ", "LAG")
	opt := func(v *float64, f func(float64) string) string {
		if v == nil {
			return "-"
		}
		return f(*v)
	}
	for _, r := range rows {
		shard := r.Shard
		if shard == "" {
			shard = "-"
		}
		if r.Error != "" {
			t.row(r.Pod, r.Role, shard, r.Ready, "unreachable: "+firstLine(r.Error), "", "", "", "", "", "", "")
			continue
		}
		wal, lag, vecs := "-", "-", "-"
		if r.WALSeq != nil {
			wal = fmt.Sprint(*r.WALSeq)
		}
		if r.LagRecords != nil {
			lag = fmt.Sprint(*r.LagRecords)
		}
		if r.Vectors != nil {
			vecs = fmt.Sprint(*r.Vectors)
		}
		t.row(r.Pod, r.Role, shard, r.Ready, opt(r.QPS, fmtQPS), opt(r.P50Millis, fmtMillis), opt(r.P99Millis, fmtMillis),
			opt(r.CPUCores, func(c float64) string { return fmt.Sprintf("%.0fm", c*1000) }), opt(r.MemoryBytes, fmtBytes), vecs, wal, lag)
	}
	return t.flush()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}
