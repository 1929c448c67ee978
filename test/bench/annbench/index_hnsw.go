package main

import (
	"fmt"

	"github.com/annshard/annshard/shardserver/hnsw"
)

// hnswMetric maps the benchmark's metric to the index's, by name.
func hnswMetric(m metric) (hnsw.Metric, error) {
	hm, err := hnsw.ParseMetric(m.String())
	if err != nil {
		return 0, fmt.Errorf("map metric: %w", err)
	}
	return hm, nil
}

// hnswDistance is the index's own distance kernel for m, for the exact-scan baseline.
func hnswDistance(m metric) (func(a, b []float32) float32, error) {
	hm, err := hnswMetric(m)
	if err != nil {
		return nil, err
	}
	return hnsw.DistanceFunc(hm), nil
}

// newHNSW builds the index under test: annshard's own HNSW.
func newHNSW(p indexParams) (annIndex, error) {
	m, err := hnswMetric(p.metric)
	if err != nil {
		return nil, err
	}
	q := hnsw.NoQuantization
	if p.int8 {
		q = hnsw.Int8
	}
	x, err := hnsw.New(hnsw.Config{
		Quantization:   q,
		Dim:            p.dim,
		Metric:         m,
		M:              p.m,
		EfConstruction: p.efConstruction,
		EfSearch:       p.efSearch,
		Seed:           p.seed,
		Capacity:       p.capacity,
	})
	if err != nil {
		return nil, fmt.Errorf("create HNSW index: %w", err)
	}
	return hnswIndex{x}, nil
}

type hnswIndex struct{ *hnsw.Index }

func (x hnswIndex) NewSearcher() searcher { return &hnswSearcher{x: x.Index} }

// hnswSearcher keeps the result buffer of one goroutine across queries, which is what
// makes SearchInto allocation-free.
type hnswSearcher struct {
	x   *hnsw.Index
	buf []hnsw.Result
}

func (s *hnswSearcher) Search(keys []uint64, q []float32, k, ef int) ([]uint64, error) {
	res, err := s.x.SearchInto(s.buf[:0], q, k, hnsw.SearchOptions{Ef: ef})
	if err != nil {
		return keys[:0], err
	}
	s.buf = res
	keys = keys[:0]
	for _, r := range res {
		keys = append(keys, r.Key)
	}
	return keys, nil
}

// SearchSubset confines the search to p through hnsw.Index.SearchSubset, with the plan
// forced or (planAuto) chosen by the index, and says which plan answered.
func (s *hnswSearcher) SearchSubset(keys []uint64, q []float32, k, ef int, p *partition, plan string) ([]uint64, string, error) {
	sub := hnsw.Subset{Len: len(p.keys), Contains: func(key uint64) bool { return p.member[key] },
		Keys: func(yield func(uint64) bool) {
			for _, key := range p.keys {
				if !yield(key) {
					return
				}
			}
		}}
	switch plan {
	case planScan:
		sub.Plan = hnsw.PlanScan
	case planWalk:
		sub.Plan = hnsw.PlanWalk
	}
	res, used, err := s.x.SearchSubset(s.buf[:0], q, k, hnsw.SearchOptions{Ef: ef}, sub)
	if err != nil {
		return keys[:0], "", err
	}
	s.buf = res
	keys = keys[:0]
	for _, r := range res {
		keys = append(keys, r.Key)
	}
	return keys, used.String(), nil
}
