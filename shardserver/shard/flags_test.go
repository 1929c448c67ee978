package shard

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/hnsw"
	"github.com/annshard/annshard/shardserver/wal"
)

func TestDerivePrimary(t *testing.T) {
	tests := []struct {
		pod, svc, ns, port string
		want               string
		wantErr            bool
	}{
		{"products-shard-0-0", "", "", "8080", "", false},
		{"products-shard-0-2", "", "", "8080", "http://products-shard-0-0.products-shard-0:8080", false},
		{"products-shard-3-1", "svc", "", "9000", "http://products-shard-3-0.svc:9000", false},
		{"products-shard-3-1", "", "team-a", "", "http://products-shard-3-0.products-shard-3.team-a:8080", false},
		{"noordinal", "", "", "8080", "", true},
		{"trailing-", "", "", "8080", "", true},
		{"x-01", "", "", "8080", "", true},
		{"x--1", "", "", "8080", "", true},
		{"-1", "", "", "8080", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.pod, func(t *testing.T) {
			got, err := DerivePrimary(tt.pod, tt.svc, tt.ns, tt.port)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("DerivePrimary = %q, %v; want %q (error %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	t.Run("defaults and env fallback", func(t *testing.T) {
		c, err := parseFlags([]string{"--dimension", "16"}, env(map[string]string{
			"ANNSHARD_METRIC": "cosine", "ANNSHARD_WAL_SYNC": "interval", "ANNSHARD_DIMENSION": "99",
			"ANNSHARD_TOKEN": "envtok", "ANNSHARD_SNAPSHOT_INTERVAL": "30s",
		}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.Dimension != 16 || c.Metric != hnsw.Cosine || c.WALSync != wal.SyncInterval || c.Token != "envtok" ||
			c.SnapshotInterval != 30*time.Second || c.M != 16 || c.Primary != "" || c.MaxK != 1000 {
			t.Fatalf("config %+v", c)
		}
	})
	t.Run("token file wins and pod name derives the primary", func(t *testing.T) {
		c, err := parseFlags([]string{"--dimension=4", "--token-file", tokenFile, "--listen", ":9090", "--pod-name", "idx-shard-1-2"},
			env(map[string]string{"ANNSHARD_TOKEN": "envtok"}), io.Discard)
		if err != nil || c.Token != "tok" || c.Primary != "http://idx-shard-1-0.idx-shard-1:9090" {
			t.Fatalf("config %+v, %v", c, err)
		}
	})
	bad := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no dimension", nil, nil},
		{"bad metric", []string{"--dimension=4", "--metric=hamming"}, nil},
		{"bad sync", []string{"--dimension=4", "--wal-sync=never"}, nil},
		{"bad env", []string{"--dimension=4"}, map[string]string{"ANNSHARD_M": "many"}},
		{"missing token file", []string{"--dimension=4", "--token-file=/nonexistent/x"}, nil},
		{"extra args", []string{"--dimension=4", "extra"}, nil},
		{"zero limit", []string{"--dimension=4", "--max-k=0"}, nil},
		{"bad pod name", []string{"--dimension=4", "--pod-name=solo"}, nil},
		{"index and routing file", []string{"--dimension=4", "--index=products", "--routing-file=/r.json"}, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseFlags(tt.args, env(tt.env), io.Discard); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var out strings.Builder
		_, err := parseFlags([]string{"-h"}, env(nil), &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("err = %v, want flag.ErrHelp", err)
		}
		for _, f := range []string{"-listen", "-data-dir", "-dimension", "-metric", "-m ", "-ef-construction", "-ef-search",
			"-wal-sync", "-token-file", "-primary", "-max-body-bytes", "-max-k", "-max-batch", "-snapshot-interval", "ANNSHARD_"} {
			if !strings.Contains(out.String(), f) {
				t.Errorf("help does not document %s", f)
			}
		}
	})
}

func TestPrimaryPod(t *testing.T) {
	tests := []struct {
		pod, want string
		wantErr   bool
	}{
		{"idx-shard-1-0", "", false},
		{"idx-shard-1-2", "idx-shard-1-0", false},
		{"idx-shard-1-x", "", true},
		{"noordinal", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.pod, func(t *testing.T) {
			got, err := PrimaryPod(tt.pod)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("PrimaryPod(%q) = %q, %v; want %q (error %v)", tt.pod, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestKubernetesModeReplicaWatchesThePrimaryPod(t *testing.T) {
	cfg, err := parseFlags([]string{"--dimension=4", "--data-dir=" + t.TempDir(), "--index=idx",
		"--namespace=ns", "--pod-name=idx-shard-0-1"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrimaryPod != "idx-shard-0-0" || cfg.Primary != "" {
		t.Fatalf("PrimaryPod %q Primary %q: a replica in Kubernetes mode must find its primary through the API, not DNS", cfg.PrimaryPod, cfg.Primary)
	}
}
