package framework

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"

	"github.com/annshard/annshard/shardserver/client"
)

// Dataset is a deterministic clustered Gaussian set with ids "v<i>" and optional
// partitions, plus queries drawn from the same mixture.
type Dataset struct {
	Dim        int
	IDs        []string
	Partitions []string // empty strings when unpartitioned
	Vectors    [][]float32
	Queries    [][]float32
}

// Generate makes n vectors of dim dimensions around clusters centres, and nq queries.
// With partitions > 0 the i-th vector goes to partition "p<i mod partitions>".
func Generate(n, nq, dim, clusters, partitions int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	centres := make([][]float32, clusters)
	for i := range centres {
		centres[i] = make([]float32, dim)
		for j := range centres[i] {
			centres[i][j] = float32(rng.NormFloat64() * 4)
		}
	}
	point := func() []float32 {
		c := centres[rng.IntN(clusters)]
		v := make([]float32, dim)
		for j := range v {
			v[j] = c[j] + float32(rng.NormFloat64())
		}
		return v
	}
	d := &Dataset{Dim: dim}
	for i := range n {
		d.IDs = append(d.IDs, "v"+strconv.Itoa(i))
		p := ""
		if partitions > 0 {
			p = "p" + strconv.Itoa(i%partitions)
		}
		d.Partitions = append(d.Partitions, p)
		d.Vectors = append(d.Vectors, point())
	}
	for range nq {
		d.Queries = append(d.Queries, point())
	}
	return d
}

// Load upserts the dataset through the routers in batches and returns how many were
// acknowledged.
func (d *Dataset) Load(ctx context.Context, r *Routers, batch int) (int, error) {
	done := 0
	for start := 0; start < len(d.IDs); start += batch {
		end := min(start+batch, len(d.IDs))
		req := &client.UpsertRequest{}
		for i := start; i < end; i++ {
			req.Vectors = append(req.Vectors, client.Vector{ID: d.IDs[i], Vector: d.Vectors[i], Partition: d.Partitions[i]})
		}
		var resp *client.UpsertResponse
		err := r.Do(ctx, func(c *client.Client) (err error) {
			resp, err = c.Upsert(ctx, req)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("upserting vectors %d-%d: %w", start, end-1, err)
		}
		done += resp.Upserted
	}
	return done, nil
}

// Exact returns the ids of the k nearest vectors to q by squared L2, restricted to one
// partition when partition is not empty.
func (d *Dataset) Exact(q []float32, k int, partition string) []string {
	type cand struct {
		id   string
		dist float64
	}
	var all []cand
	for i, v := range d.Vectors {
		if partition != "" && d.Partitions[i] != partition {
			continue
		}
		var s float64
		for j := range v {
			x := float64(v[j] - q[j])
			s += x * x
		}
		all = append(all, cand{d.IDs[i], s})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].dist < all[j].dist })
	out := make([]string, 0, k)
	for i := 0; i < k && i < len(all); i++ {
		out = append(out, all[i].id)
	}
	return out
}

// Recall is |got ∩ want| / |want|.
func Recall(got []client.Hit, want []string) float64 {
	if len(want) == 0 {
		return 1
	}
	set := make(map[string]bool, len(want))
	for _, id := range want {
		set[id] = true
	}
	hit := 0
	for _, h := range got {
		if set[h.ID] {
			hit++
			delete(set, h.ID)
		}
	}
	return float64(hit) / float64(len(want))
}

// MeasureRecall runs every query through the routers and returns the mean recall@k
// against exact search, failing on the first error.
func (d *Dataset) MeasureRecall(ctx context.Context, r *Routers, k int) (float64, error) {
	var sum float64
	for _, q := range d.Queries {
		var resp *client.SearchResponse
		err := r.Do(ctx, func(c *client.Client) (err error) {
			resp, err = c.Search(ctx, &client.SearchRequest{Vector: q, K: k})
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("search: %w", err)
		}
		sum += Recall(resp.Results, d.Exact(q, k, ""))
	}
	if len(d.Queries) == 0 {
		return math.NaN(), nil
	}
	return sum / float64(len(d.Queries)), nil
}
