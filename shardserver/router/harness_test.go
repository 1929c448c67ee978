package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// cluster is a router over fake shards, served over HTTP on loopback.
type cluster struct {
	t      *testing.T
	shards [][]*fakeShard // [shard][replica]; replica 0 is the primary
	r      *Router
	c      *client.Client
}

const testToken = "s3cret"

func newCluster(t *testing.T, nShards, nReplicas int, cfg Config) *cluster {
	t.Helper()
	cfg.Token = testToken
	if cfg.Seed == 0 {
		cfg.Seed = 7
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cl := &cluster{t: t, r: r}
	eps := map[int][]Endpoint{}
	for k := range nShards {
		st := newFakeStore()
		var reps []*fakeShard
		for i := range nReplicas {
			f := newFakeShard(t, st)
			reps = append(reps, f)
			eps[k] = append(eps[k], Endpoint{URL: f.url(), Ordinal: i, Name: fmt.Sprintf("s%d-%d", k, i)})
		}
		cl.shards = append(cl.shards, reps)
	}
	r.SetEndpoints(eps)
	r.SetTable(slots.Even(nShards))
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	cl.c = client.New(srv.URL, client.WithToken(testToken))
	return cl
}

// run starts the router's load polling for the rest of the test.
func (cl *cluster) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.r.Run(ctx); close(done) }()
	cl.t.Cleanup(func() { cancel(); <-done })
}

// vec returns a deterministic vector for id number i.
func vec(i int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(i), 99))
	v := make([]float32, 8)
	for j := range v {
		v[j] = rng.Float32()
	}
	return v
}

// load upserts n vectors through the router, ids v0..v(n-1), and returns them.
func (cl *cluster) load(n int, partition func(i int) string) []client.Vector {
	cl.t.Helper()
	var vs []client.Vector
	for i := range n {
		p := ""
		if partition != nil {
			p = partition(i)
		}
		vs = append(vs, client.Vector{ID: fmt.Sprintf("v%d", i), Vector: vec(i), Partition: p})
	}
	resp, err := cl.c.Upsert(context.Background(), &client.UpsertRequest{Vectors: vs})
	if err != nil {
		cl.t.Fatalf("upsert: %v", err)
	}
	if resp.Upserted != n {
		cl.t.Fatalf("upserted %d, want %d", resp.Upserted, n)
	}
	return vs
}

// bruteTopK is the reference answer over vs.
func bruteTopK(vs []client.Vector, q []float32, k int, partition string) []string {
	st := newFakeStore()
	for _, v := range vs {
		st.vecs[v.ID] = v
	}
	hits, _ := st.query(&client.SearchRequest{Vector: q, K: k, Partition: partition})
	return idsOf(hits)
}

func idsOf(hits []client.Hit) []string {
	var ids []string
	for _, h := range hits {
		ids = append(ids, h.ID)
	}
	return ids
}

func counter(t *testing.T, cl *cluster, name string) float64 {
	t.Helper()
	mfs, err := cl.r.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func errCode(err error) string {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return fmt.Sprintf("not an API error: %v", err)
	}
	return ae.Code
}
