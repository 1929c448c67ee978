package shard

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/annshard/annshard/shardserver/client"
)

// BenchmarkSearchHTTP measures the whole search path in one process (client included),
// for profiling the handler: go test -bench SearchHTTP -cpuprofile cpu.out.
func BenchmarkSearchHTTP(b *testing.B) {
	cfg := testConfig(b.TempDir())
	cfg.Dimension = 128
	cfg.M, cfg.EfConstruction = 16, 100
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.started.Store(true)
	r := newRand(1)
	items := make([]upsertItem, 2000)
	for i := range items {
		items[i] = upsertItem{id: string(rune('a'+i%26)) + string(rune(i)), vec: randVec(r, 128)}
	}
	if _, _, err := s.store.Write(b.Context(), record{op: opUpsert, upserts: items}); err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler()}
	ln := listen(b)
	go srv.Serve(ln)
	defer srv.Close()
	body, _ := json.Marshal(client.SearchRequest{VectorB64: client.EncodeB64(randVec(r, 128)), K: 10, Ef: 64})
	url := "http://" + ln.Addr().String() + "/v1/search"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
