package router

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/proctest"
	"github.com/annshard/annshard/shardserver/slots"
)

// bin is the shardserver binary the process tests run, built once on first use.
var (
	bin     proctest.Binary
	binPath string
)

func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

// needBinary builds ./shardserver once per test binary, or skips under -race and -short.
func needBinary(t *testing.T) {
	t.Helper()
	binPath = bin.Need(t)
}

// proc is one shardserver process (serve or route).
type proc struct{ p *proctest.Process }

func (p *proc) url() string { return p.p.URL() }

// startProc runs `shardserver <role> --listen addr args...` and waits for /healthz.
func startProc(t *testing.T, role string, env []string, args ...string) *proc {
	t.Helper()
	sp, err := proctest.Start(context.Background(), proctest.Spec{Bin: binPath, Role: role, Args: args,
		Env: append([]string{"GOMAXPROCS=2"}, env...), LogPath: filepath.Join(t.TempDir(), role+".log")})
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{p: sp}
	t.Cleanup(p.stop)
	return p
}

// stop sends SIGTERM, then SIGKILL after 10s; a process already gone is fine.
func (p *proc) stop() { _ = p.p.Stop(10 * time.Second) }

// kill ends the process at once, like a crash.
func (p *proc) kill() { p.p.Kill() }

// TestAgainstRealShards runs `shardserver route` in front of 2 shards x 2 replicas of
// real `shardserver serve` processes (replicas streaming from their primary) on
// loopback: writes through the router, searches compared with brute force, the
// not_primary redirect, a dead replica, a dead shard with and without allowPartial.
func TestAgainstRealShards(t *testing.T) {
	needBinary(t)
	const dim = 8
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func(name string, extra ...string) *proc {
		return startProc(t, "serve", nil, append([]string{"--data-dir", filepath.Join(dir, name), "--dimension", strconv.Itoa(dim),
			"--token-file", tokenFile, "--wal-sync", "Interval", "--m", "8", "--ef-construction", "64", "--drain-timeout", "2s"}, extra...)...)
	}
	var shards [2][2]*proc
	for k := range shards {
		shards[k][0] = serve(fmt.Sprintf("s%d-0", k))
		shards[k][1] = serve(fmt.Sprintf("s%d-1", k), "--primary", shards[k][0].url())
	}
	// The router is told that shard 1's replica is its primary: the not_primary answer
	// must send the writes to the real one.
	spec := fmt.Sprintf("0=%s,%s;1=%s,%s", shards[0][0].url(), shards[0][1].url(), shards[1][1].url(), shards[1][0].url())
	routing := filepath.Join(dir, "routing.json")
	tab, _ := slots.Even(2).MarshalJSON()
	if err := os.WriteFile(routing, tab, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := startProc(t, "route", []string{"ANNSHARD_TOKEN=" + testToken}, "--shards", spec, "--routing-file", routing,
		"--policy", "Adaptive", "--timeout", "3s", "--load-interval", "200ms", "--cache-entries", "1000")
	c := client.New(rt.url(), client.WithToken(testToken))
	ctx := context.Background()

	var vs []client.Vector
	for i := range 200 {
		v := client.Vector{ID: fmt.Sprintf("v%d", i), Vector: vec(i)}
		if i%5 == 0 {
			v.Partition = "p" + strconv.Itoa(i%3)
		}
		vs = append(vs, v)
	}
	for b := 0; b < len(vs); b += 50 {
		resp, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: vs[b : b+50]})
		if err != nil || resp.Upserted != 50 {
			t.Fatalf("upsert through the router: %+v, %v", resp, err)
		}
	}
	// Each shard holds exactly what the table gives it, and its replica catches up.
	even := slots.Even(2)
	for k := range shards {
		want := 0
		for _, v := range vs {
			if even.ShardOfKey(slots.KeyOf(v.ID, v.Partition)) == k {
				want++
			}
		}
		for r, p := range shards[k] {
			deadline := time.Now().Add(10 * time.Second)
			for {
				lr, err := client.New(p.url()).Load(ctx)
				if err == nil && lr.Vectors == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("shard %d replica %d: %+v, %v; want %d vectors", k, r, lr, err, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	t.Run("search matches brute force", func(t *testing.T) {
		for i := range 40 {
			resp, err := c.Search(ctx, &client.SearchRequest{Vector: vec(i), K: 5})
			if err != nil {
				t.Fatal(err)
			}
			want := bruteTopK(vs, vec(i), 5, "")
			got := idsOf(resp.Results)
			if len(got) != 5 || got[0] != vs[i].ID {
				t.Fatalf("query %d: %v, want %v", i, got, want)
			}
			if !slices.Equal(got, want) {
				t.Logf("query %d: approximate answer %v vs exact %v", i, got, want)
			}
		}
		resp, err := c.Search(ctx, &client.SearchRequest{Vector: vec(5), K: 10, Partition: "p2"})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range resp.Results {
			if h.Partition != "p2" {
				t.Fatalf("partition search returned %+v", h)
			}
		}
		if want := bruteTopK(vs, vec(5), 10, "p2"); !slices.Equal(idsOf(resp.Results), want) {
			t.Fatalf("partition search %v, want %v", idsOf(resp.Results), want)
		}
	})

	t.Run("get and delete by id", func(t *testing.T) {
		got, err := c.Get(ctx, "v10", "")
		if err != nil || got.ID != "v10" || got.Partition != vs[10].Partition {
			t.Fatalf("get v10: %+v, %v", got, err)
		}
		del, err := c.Delete(ctx, "v10", "")
		if err != nil || !del.Deleted {
			t.Fatalf("delete v10: %+v, %v", del, err)
		}
		resp, err := c.Search(ctx, &client.SearchRequest{Vector: vec(10), K: 3})
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(idsOf(resp.Results), "v10") {
			t.Fatalf("deleted v10 still found: %v", idsOf(resp.Results))
		}
	})

	t.Run("a dead replica is routed around", func(t *testing.T) {
		shards[0][1].kill()
		for i := range 20 {
			if _, err := c.Search(ctx, &client.SearchRequest{Vector: vec(i), K: 3}); err != nil {
				t.Fatalf("search %d with a dead replica: %v", i, err)
			}
		}
	})

	t.Run("a dead shard", func(t *testing.T) {
		shards[1][0].kill()
		shards[1][1].kill()
		_, err := c.Search(ctx, &client.SearchRequest{Vector: vec(300), K: 3})
		if errCode(err) != client.CodeUnavailable || !strings.Contains(err.Error(), "shard 1") {
			t.Fatalf("err %v, want unavailable naming shard 1", err)
		}
		resp, err := c.Search(ctx, &client.SearchRequest{Vector: vec(300), K: 3, AllowPartial: true})
		if err != nil || !resp.Partial || !slices.Equal(resp.MissingShards, []int{1}) || len(resp.Results) != 3 {
			t.Fatalf("partial answer %+v, %v", resp, err)
		}
	})

	rt.stop()
}
