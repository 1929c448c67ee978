package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/annshard/annshard/shardserver/proctest"
)

var bin proctest.Binary

func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

// TestSoakRounds runs a few rounds of the soak (the primary and the replica both
// killed) and checks it saw writes, kills and checks, and lost none.
func TestSoakRounds(t *testing.T) {
	o := options{rounds: 3, writers: 2, ids: 20, dim: 4, maxBatch: 4, replicaKillEvery: 2,
		minRun: 50 * time.Millisecond, maxRun: 150 * time.Millisecond, walSync: "Always", snapshotRecords: 20,
		bin: bin.Need(t), seed: 3}
	res, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.PrimaryKills != 3 || res.ReplicaKills != 1 || res.WritesAcked == 0 || res.Lost != 0 ||
		res.ChecksPrimary != 3*2*20 || res.ChecksReplica != 3*2*20 || res.RecoveryP99Ms <= 0 {
		t.Fatalf("%+v", res)
	}
}
