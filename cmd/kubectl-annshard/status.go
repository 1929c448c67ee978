package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	annv1alpha1 "github.com/annshard/annshard/api/v1alpha1"
	"github.com/annshard/annshard/shardserver/client"
)

func newStatusCmd(g *globalOptions) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status INDEX",
		Short: "Conditions, shards and migrations of an index, in one screen",
		Long: `status shows whether an index is healthy and what it is doing: its conditions, then one row per
shard (replicas ready/desired, hash slots, vectors, queries per second, p99 latency, replication
lag, the autoscaler's last observation and any change of replicas in progress) and one row per
slot migration in flight (phase, progress, rate).

Replicas, slots, vectors, QPS and p99 come from the index's status, which the operator updates
every few seconds; the replication lag is read live from the shard pods (the largest lag of a
shard's replicas, in WAL records). Colours are used only on a terminal (NO_COLOR turns them off).`,
		Example: `  kubectl annshard status products
  kubectl annshard status products -n search -o yaml
  kubectl annshard status products -o json | jq '.shards[] | select(.readyReplicas < .desiredReplicas)'`,
		Args: exactArgs(1, "the index name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			s, err := newSession(g)
			if err != nil {
				return err
			}
			rep, err := buildStatus(cmd.Context(), s, args[0], time.Now())
			if err != nil {
				return err
			}
			if output != "" {
				return printData(g.streams.Out, output, rep)
			}
			return rep.print(g.streams.Out, newStyle(g.streams.Out))
		},
	}
	outputFlag(c, &output)
	return c
}

// statusReport is what status prints, and its -o json|yaml form.
type statusReport struct {
	Name         string            `json:"name"`
	Namespace    string            `json:"namespace"`
	Dimension    int32             `json:"dimension"`
	Metric       string            `json:"metric"`
	Shards       int32             `json:"shardsWanted"`
	ReadyShards  int32             `json:"readyShards"`
	Vectors      int64             `json:"vectors"`
	QPS          int64             `json:"qps"`
	RoutingEpoch int64             `json:"routingEpoch"`
	Generation   int64             `json:"generation"`
	Observed     int64             `json:"observedGeneration"`
	Conditions   []conditionRow    `json:"conditions"`
	ShardRows    []shardRow        `json:"shards"`
	Migrations   []migrationRow    `json:"migrations"`
	LiveErrors   map[string]string `json:"podErrors,omitempty"`
	now          time.Time
}

type conditionRow struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

type shardRow struct {
	Shard         int32 `json:"shard"`
	Replicas      int32 `json:"replicas"`
	ReadyReplicas int32 `json:"readyReplicas"`
	// DesiredReplicas is the count the operator moves the shard toward (the autoscaler's
	// decision); it differs from Replicas while a replica is added or drained.
	DesiredReplicas int32 `json:"desiredReplicas"`
	// ObservedMetric is the autoscaling metric the operator last decided on, with its unit
	// and target ("212 QPS/replica, target 40"); empty with autoscaling off or no sample.
	ObservedMetric string  `json:"observedMetric,omitempty"`
	Slots          int32   `json:"slots"`
	Vectors        int64   `json:"vectors"`
	QPS            int64   `json:"qps"`
	P99Millis      int64   `json:"p99Millis"`
	LagRecords     *uint64 `json:"replicationLagRecords,omitempty"`
}

type migrationRow struct {
	ID     string `json:"id"`
	From   int32  `json:"fromShard"`
	To     int32  `json:"toShard"`
	Slots  string `json:"slots"`
	Phase  string `json:"phase"`
	Copied int64  `json:"copied"`
	// Total is the operator's estimate of the records to copy; 0 when unknown.
	Total int64 `json:"total"`
	// Lag is the source's log records the destination has not applied yet.
	Lag int64 `json:"lag"`
	// BytesPerSecond is the mean copy rate since the move started.
	BytesPerSecond int64  `json:"bytesPerSecond"`
	Reason         string `json:"reason,omitempty"`
	Message        string `json:"message,omitempty"`
}

// buildStatus reads the index and the live replication lag of its shard pods.
func buildStatus(ctx context.Context, s *session, name string, now time.Time) (*statusReport, error) {
	idx, err := s.index(ctx, name)
	if err != nil {
		return nil, err
	}
	rep := statusFromIndex(idx, now)
	pods, err := s.podsOf(ctx, name, "shard")
	if err != nil {
		rep.LiveErrors = map[string]string{"pods": err.Error()}
		return rep, nil
	}
	loads, errs := loadReports(ctx, s, pods)
	rep.addLag(pods, loads)
	if len(errs) > 0 {
		rep.LiveErrors = map[string]string{}
		for pod, err := range errs {
			rep.LiveErrors[pod] = err.Error()
		}
	}
	return rep, nil
}

// loadReports fetches /v1/load of every pod that can be reached, in parallel (like
// top's scrapeAll), so that status takes one round trip, not one per pod.
func loadReports(ctx context.Context, s *session, pods []corev1.Pod) (map[string]*client.LoadReport, map[string]error) {
	conns, errs := s.podClients(ctx, pods)
	loads := map[string]*client.LoadReport{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, c := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			l, err := c.api.LoadSummary(ctx) // status shows no per-slot counters
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[name] = err
				return
			}
			loads[name] = l
		})
	}
	wg.Wait()
	return loads, errs
}

// progress is "copied/total (percent)" when the total is known, the copied count alone
// otherwise. The total is an estimate made when the move started, so writes during the
// move can carry copied past it: the percentage is capped at 100.
func (m migrationRow) progress() string {
	if m.Total <= 0 {
		return strconv.FormatInt(m.Copied, 10)
	}
	return fmt.Sprintf("%d/%d (%d%%)", m.Copied, m.Total, min(100, m.Copied*100/m.Total))
}

// fmtRate prints a copy rate in binary units per second; "-" when none was measured.
func fmtRate(bps int64) string {
	if bps <= 0 {
		return "-"
	}
	return fmtBytes(float64(bps)) + "/s"
}

// observedMetric names the autoscaler's last observation of a shard with its unit and target.
func observedMetric(a annv1alpha1.AutoscalingSpec, v *int64) string {
	if !a.Enabled || v == nil {
		return ""
	}
	unit := map[annv1alpha1.AutoscalingMetric]string{
		annv1alpha1.AutoscalingQPSPerReplica:  " QPS/replica",
		annv1alpha1.AutoscalingCPUUtilization: "% CPU",
		annv1alpha1.AutoscalingLatencyP99:     "ms p99",
	}[a.Metric]
	return fmt.Sprintf("%d%s, target %d", *v, unit, a.Target)
}

func statusFromIndex(idx *annv1alpha1.AnnIndex, now time.Time) *statusReport {
	st := idx.Status
	rep := &statusReport{
		Name: idx.Name, Namespace: idx.Namespace, Dimension: idx.Spec.Dimension, Metric: string(idx.Spec.Metric),
		Shards: idx.Spec.Shards, ReadyShards: st.ReadyShards, Vectors: st.Vectors, QPS: st.QPS,
		RoutingEpoch: st.RoutingEpoch, Generation: idx.Generation, Observed: st.ObservedGeneration,
		Conditions: []conditionRow{}, ShardRows: []shardRow{}, Migrations: []migrationRow{}, now: now,
	}
	// Conditions in the order a person reads them: the summary first.
	order := []string{annv1alpha1.ConditionAvailable, annv1alpha1.ConditionProgressing, annv1alpha1.ConditionDegraded,
		annv1alpha1.ConditionScaling, annv1alpha1.ConditionMigrating}
	conds := slices.Clone(st.Conditions)
	slices.SortStableFunc(conds, func(a, b metav1.Condition) int {
		ia, ib := slices.Index(order, a.Type), slices.Index(order, b.Type)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		return ia - ib
	})
	for _, c := range conds {
		rep.Conditions = append(rep.Conditions, conditionRow{Type: c.Type, Status: string(c.Status), Reason: c.Reason,
			Message: c.Message, LastTransitionTime: c.LastTransitionTime.Time})
	}
	for _, sh := range st.Shards {
		desired := sh.DesiredReplicas
		if desired == 0 { // written by an operator from before the autoscaler
			desired = sh.Replicas
		}
		rep.ShardRows = append(rep.ShardRows, shardRow{Shard: sh.Shard, Replicas: sh.Replicas, ReadyReplicas: sh.ReadyReplicas,
			DesiredReplicas: desired, ObservedMetric: observedMetric(idx.Spec.Autoscaling, sh.ObservedMetric),
			Slots: sh.Slots, Vectors: sh.Vectors, QPS: sh.QPS, P99Millis: sh.P99Millis})
	}
	for _, m := range st.Migrations {
		if m.Phase == annv1alpha1.MigrationDone {
			continue // finished: not in flight
		}
		rep.Migrations = append(rep.Migrations, migrationRow{ID: m.ID, From: m.FromShard, To: m.ToShard, Slots: m.Slots,
			Phase: string(m.Phase), Copied: m.Copied, Total: m.Total, Lag: m.Lag, BytesPerSecond: m.BytesPerSecond,
			Reason: m.Reason, Message: m.Message})
	}
	return rep
}

// addLag sets each shard's replication lag: the largest lag among its reachable replicas.
func (r *statusReport) addLag(pods []corev1.Pod, loads map[string]*client.LoadReport) {
	lag := map[int32]uint64{}
	seen := map[int32]bool{}
	for _, p := range pods {
		l, ok := loads[p.Name]
		if !ok {
			continue
		}
		k, err := strconv.Atoi(p.Labels["annshard.io/shard"])
		if err != nil {
			continue
		}
		seen[int32(k)] = true
		lag[int32(k)] = max(lag[int32(k)], l.ReplicationLagRecords)
	}
	for i := range r.ShardRows {
		if k := r.ShardRows[i].Shard; seen[k] {
			v := lag[k]
			r.ShardRows[i].LagRecords = &v
		}
	}
}

func (r *statusReport) print(w io.Writer, st style) error {
	fmt.Fprintf(w, "AnnIndex %s/%s: %d/%d shards ready, dimension %d, %s, %d vectors, %d QPS, routing epoch %d",
		r.Namespace, r.Name, r.ReadyShards, r.Shards, r.Dimension, r.Metric, r.Vectors, r.QPS, r.RoutingEpoch)
	if r.Observed != r.Generation {
		fmt.Fprintf(w, " (status is of generation %d, the spec is at %d)", r.Observed, r.Generation)
	}
	fmt.Fprint(w, "\n\n")

	if len(r.Conditions) == 0 {
		fmt.Fprintln(w, "No conditions yet: the operator has not reconciled the index (is it running?).")
	} else {
		t := newTable(w, "CONDITION", "STATUS", "REASON", "AGE", "MESSAGE")
		for _, c := range r.Conditions {
			t.row(c.Type, st.paint(conditionColour(c), c.Status), c.Reason, duration.HumanDuration(r.now.Sub(c.LastTransitionTime)), c.Message)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)

	if len(r.ShardRows) == 0 {
		fmt.Fprintln(w, "No shards observed yet.")
	} else {
		t := newTable(w, "SHARD", "READY/DESIRED", "SLOTS", "VECTORS", "QPS", "P99", "REPL LAG", "AUTOSCALER")
		for _, sh := range r.ShardRows {
			colour := colGreen
			switch {
			case sh.ReadyReplicas == 0:
				colour = colRed
			case sh.ReadyReplicas < sh.DesiredReplicas:
				colour = colYellow
			}
			scaler := sh.ObservedMetric
			if sh.Replicas != sh.DesiredReplicas {
				scaler = strings.TrimPrefix(fmt.Sprintf("%s; %d -> %d replicas", scaler, sh.Replicas, sh.DesiredReplicas), "; ")
			}
			if scaler == "" {
				scaler = "-"
			}
			lag := "?"
			if sh.LagRecords != nil {
				lag = strconv.FormatUint(*sh.LagRecords, 10)
			}
			t.row(sh.Shard, st.paint(colour, fmt.Sprintf("%d/%d", sh.ReadyReplicas, sh.DesiredReplicas)), sh.Slots,
				sh.Vectors, sh.QPS, fmtMillis(float64(sh.P99Millis)), lag, scaler)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)

	if len(r.Migrations) == 0 {
		fmt.Fprintln(w, "No slot migrations in flight.")
	} else {
		t := newTable(w, "MIGRATION", "FROM", "TO", "SLOTS", "PHASE", "PROGRESS", "LAG", "RATE", "MESSAGE")
		for _, m := range r.Migrations {
			colour := colPlain
			if m.Phase == string(annv1alpha1.MigrationFailed) {
				colour = colRed
			}
			t.row(m.ID, m.From, m.To, m.Slots, st.paint(colour, m.Phase), m.progress(), m.Lag, fmtRate(m.BytesPerSecond), m.Message)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(r.LiveErrors) > 0 {
		fmt.Fprintf(w, "\nReplication lag unknown (?) for pods that could not be reached:\n")
		names := make([]string, 0, len(r.LiveErrors))
		for n := range r.LiveErrors {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(w, "  %s: %s\n", n, r.LiveErrors[n])
		}
	}
	return nil
}

// conditionColour: green when the condition is in its good state, red when in its bad
// one, yellow for Unknown and for the transient ones (Progressing, Scaling, Migrating).
func conditionColour(c conditionRow) string {
	switch {
	case c.Status == "Unknown":
		return colYellow
	case c.Type == annv1alpha1.ConditionAvailable:
		return map[bool]string{true: colGreen, false: colRed}[c.Status == "True"]
	case c.Type == annv1alpha1.ConditionDegraded:
		return map[bool]string{true: colRed, false: colGreen}[c.Status == "True"]
	case c.Status == "True":
		return colYellow
	}
	return colPlain
}
