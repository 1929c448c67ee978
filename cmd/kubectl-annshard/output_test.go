package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
)

func sampleIndex(now time.Time) *annv1alpha1.AnnIndex {
	idx := testIndex(128, annv1alpha1.MetricL2)
	idx.Name, idx.Generation = "products", 3
	idx.Spec.Shards = 2
	idx.Spec.Autoscaling = annv1alpha1.AutoscalingSpec{Enabled: true, Metric: annv1alpha1.AutoscalingQPSPerReplica, Target: 40}
	ago := metav1.NewTime(now.Add(-5 * time.Minute))
	idx.Status = annv1alpha1.AnnIndexStatus{
		ObservedGeneration: 3, RoutingEpoch: 4, ReadyShards: 2, Vectors: 5000, QPS: 42,
		Conditions: []metav1.Condition{
			{Type: "Degraded", Status: "True", Reason: "ReplicasNotReady", Message: "shard 1: 1/2 replicas ready", LastTransitionTime: ago},
			{Type: "Available", Status: "True", Reason: "AllShardsServing", Message: "every shard has a ready primary", LastTransitionTime: ago},
		},
		Shards: []annv1alpha1.ShardStatus{
			{Shard: 0, Replicas: 2, ReadyReplicas: 2, DesiredReplicas: 2, Slots: 2048, Vectors: 2500, QPS: 30, P99Millis: 3},
			// Scaling up: the StatefulSet runs 2, the autoscaler wants 3.
			{Shard: 1, Replicas: 2, ReadyReplicas: 1, DesiredReplicas: 3, ObservedMetric: ptr.To[int64](212), Slots: 2048, Vectors: 2500, QPS: 12, P99Millis: 120},
		},
		Migrations: []annv1alpha1.MigrationStatus{
			{ID: "m1", FromShard: 0, ToShard: 1, Slots: "0-255", Phase: annv1alpha1.MigrationCopying, Copied: 1200, Total: 4800,
				Lag: 35, BytesPerSecond: 3 << 20, Reason: "Reshard"},
			{ID: "m2", FromShard: 1, ToShard: 0, Slots: "400", Phase: annv1alpha1.MigrationPending},
			{ID: "m0", FromShard: 1, ToShard: 0, Slots: "300", Phase: annv1alpha1.MigrationDone},
		},
	}
	return idx
}

func TestStatusTable(t *testing.T) {
	now := time.Now()
	rep := statusFromIndex(sampleIndex(now), now)
	rep.ShardRows[0].LagRecords = ptr.To[uint64](0)
	var b bytes.Buffer
	if err := rep.print(&b, style{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	want := []string{
		"AnnIndex ns/products: 2/2 shards ready, dimension 128, L2, 5000 vectors, 42 QPS, routing epoch 4\n",
		// Available first, then Degraded, whatever the order in status.
		"CONDITION   STATUS   REASON             AGE   MESSAGE\nAvailable   True     AllShardsServing   5m    every shard has a ready primary\nDegraded    True",
		"SHARD   READY/DESIRED   SLOTS   VECTORS   QPS   P99     REPL LAG   AUTOSCALER\n" +
			"0       2/2             2048    2500      30    3.0ms   0          -\n" +
			"1       1/3             2048    2500      12    120ms   ?          212 QPS/replica, target 40; 2 -> 3 replicas\n",
		// Only migrations in flight.
		"MIGRATION   FROM   TO    SLOTS   PHASE     PROGRESS          LAG   RATE      MESSAGE\n" +
			"m1          0      1     0-255   Copying   1200/4800 (25%)   35    3.0Mi/s   \n" +
			"m2          1      0     400     Pending   0                 0     -         \n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("status output lacks\n%s\n--- got:\n%s", w, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour escapes without a terminal")
	}

	// With colour, every cell of a coloured column carries an escape of one length, so
	// the columns still line up.
	b.Reset()
	if err := rep.print(&b, style{on: true}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	var shardLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "0 ") || strings.HasPrefix(l, "1 ") {
			shardLines = append(shardLines, l)
		}
	}
	if len(shardLines) != 2 || !strings.Contains(shardLines[0], colGreen+"2/2"+colReset) || !strings.Contains(shardLines[1], colYellow+"1/3"+colReset) {
		t.Fatalf("coloured shard rows: %q", shardLines)
	}
	if strings.Index(shardLines[0], "2048") != strings.Index(shardLines[1], "2048") {
		t.Fatalf("columns misaligned with colour:\n%s\n%s", shardLines[0], shardLines[1])
	}

	// No conditions, no shards: say so instead of printing empty tables.
	empty := statusFromIndex(testIndex(4, annv1alpha1.MetricL2), now)
	b.Reset()
	_ = empty.print(&b, style{})
	for _, w := range []string{"No conditions yet", "No shards observed yet.", "No slot migrations in flight."} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("empty status lacks %q:\n%s", w, b.String())
		}
	}
}

func TestStatusJSON(t *testing.T) {
	now := time.Now()
	rep := statusFromIndex(sampleIndex(now), now)
	var b bytes.Buffer
	if err := printData(&b, "json", rep); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"readyReplicas": 1`, `"desiredReplicas": 3`, `"observedMetric": "212 QPS/replica, target 40"`, `"phase": "Copying"`, `"total": 4800`, `"bytesPerSecond": 3145728`, `"type": "Available"`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("json lacks %s:\n%s", w, b.String())
		}
	}
	b.Reset()
	if err := printData(&b, "yaml", rep); err != nil || !strings.Contains(b.String(), "name: products\n") {
		t.Fatalf("yaml: %v\n%s", err, b.String())
	}
}

func TestTopTable(t *testing.T) {
	rows := []topRow{
		{Pod: "products-shard-0-0", Role: "primary", Shard: "0", Ready: true, QPS: ptr.To(12.5), P50Millis: ptr.To(0.4), P99Millis: ptr.To(2.25),
			CPUCores: ptr.To(0.25), MemoryBytes: ptr.To(float64(150 << 20)), WALSeq: ptr.To[uint64](5000), LagRecords: ptr.To[uint64](0), Vectors: ptr.To(2500)},
		{Pod: "products-router-abc", Role: "router", Ready: true, QPS: ptr.To(40.0), CPUCores: ptr.To(0.01), MemoryBytes: ptr.To(float64(30 << 20))},
		{Pod: "products-shard-1-1", Role: "shard", Shard: "1", Error: "dial tcp 10.0.0.5:8080: connection refused\nmore"},
	}
	var b bytes.Buffer
	if err := printTop(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := "POD                   ROLE      SHARD   READY   QPS                                                       P50     P99     CPU    MEMORY    VECTORS   WAL SEQ   LAG\n" +
		"products-shard-0-0    primary   0       true    12                                                        400µs   2.2ms   250m   150.0Mi   2500      5000      0\n" +
		"products-router-abc   router    -       true    40                                                        -       -       10m    30.0Mi    -         -         -\n" +
		"products-shard-1-1    shard     1       false   unreachable: dial tcp 10.0.0.5:8080: connection refused" + strings.Repeat(" ", 56) + "\n"
	if b.String() != want {
		t.Fatalf("top table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestHistQuantile(t *testing.T) {
	hist := func(counts ...uint64) map[string]*dto.MetricFamily {
		bounds := []float64{0.001, 0.01, 0.1}
		h := &dto.Histogram{SampleCount: ptr.To(counts[len(counts)-1])}
		for i, ub := range bounds {
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr.To(ub), CumulativeCount: ptr.To(counts[i])})
		}
		name := "lat"
		return map[string]*dto.MetricFamily{"lat": {Name: &name, Metric: []*dto.Metric{{Histogram: h}}}}
	}
	a := hist(10, 10, 10, 10)
	// 100 new observations: 50 under 1ms, 40 in (1ms, 10ms], 10 in (10ms, 100ms].
	b := hist(60, 100, 110, 110)
	if p50 := histQuantile(a, b, "lat", nil, 0.5); p50 == nil || math.Abs(*p50-1) > 1e-9 {
		t.Fatalf("p50 = %v, want 1ms", p50)
	}
	if p99 := histQuantile(a, b, "lat", nil, 0.99); p99 == nil || math.Abs(*p99-91) > 1e-6 {
		t.Fatalf("p99 = %v, want 91ms", *p99)
	}
	if q := histQuantile(a, a, "lat", nil, 0.5); q != nil {
		t.Fatalf("no new observations: %v, want nil", *q)
	}
}

func TestSearchTableAndParseVector(t *testing.T) {
	var b bytes.Buffer
	err := printResults(&b, []searchResult{{Query: "id 7", Results: []client.Hit{{ID: "7", Distance: 0}, {ID: "12", Distance: 0.123456789, Partition: "p1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := "RANK   ID    DISTANCE   PARTITION\n1      7     0          \n2      12    0.123457   p1\n"
	if b.String() != want {
		t.Fatalf("search table:\n%q\nwant\n%q", b.String(), want)
	}
	for _, in := range []string{"1,2.5,-3", "[1, 2.5, -3]", "1 2.5 -3"} {
		v, err := parseVector(in)
		if err != nil || len(v) != 3 || v[1] != 2.5 || v[2] != -3 {
			t.Errorf("parseVector(%q) = %v, %v", in, v, err)
		}
	}
	for _, in := range []string{"", "1,x", "[]"} {
		if _, err := parseVector(in); err == nil {
			t.Errorf("parseVector(%q) accepted", in)
		}
	}
}
