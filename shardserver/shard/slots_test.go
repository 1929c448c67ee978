package shard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/annshard/annshard/shardserver/client"
	"github.com/annshard/annshard/shardserver/slots"
)

// idsInSlots returns n ids whose slot is in set, and n whose slot is not.
func idsInSlots(set slots.Set, n int) (in, out []string) {
	for i := 0; len(in) < n || len(out) < n; i++ {
		id := fmt.Sprintf("id-%d", i)
		if set.Has(slots.Of(id)) {
			if len(in) < n {
				in = append(in, id)
			}
		} else if len(out) < n {
			out = append(out, id)
		}
	}
	return in, out
}

func readSlotRecords(t *testing.T, body []byte) []client.SlotRecord {
	t.Helper()
	var out []client.SlotRecord
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var r client.SlotRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestSlotsMoveLifecycle(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s, hs := newTestServer(t, cfg)
	c := client.New(hs.URL)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	moving := slots.Range(0, 1023)
	in, out := idsInSlots(moving, 20)
	var vecs []client.Vector
	for _, id := range append(append([]string{}, in...), out...) {
		vecs = append(vecs, client.Vector{ID: id, Vector: randVec(r, testDim)})
	}
	if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: vecs}); err != nil {
		t.Fatal(err)
	}

	t.Run("export", func(t *testing.T) {
		code, body := do(t, http.MethodGet, hs.URL+"/v1/internal/slots:export?slots="+moving.String(), "", nil)
		if code != http.StatusOK {
			t.Fatalf("export = %d %s", code, body)
		}
		var got []string
		for _, rec := range readSlotRecords(t, body) {
			if rec.Seq != 1 {
				t.Fatalf("export seq %d, want 1", rec.Seq)
			}
			for _, v := range rec.Upserts {
				vec, err := client.DecodeB64(v.VectorB64, testDim)
				if err != nil || !moving.Has(slots.Of(v.ID)) {
					t.Fatalf("exported %+v: %v", v, err)
				}
				if want, _ := get(t, s.store, v.ID, s.store.hidden.Load()); vec[0] != want.Vector[0] {
					t.Fatalf("exported vector of %s differs", v.ID)
				}
				got = append(got, v.ID)
			}
		}
		sort.Strings(got)
		want := append([]string{}, in...)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("exported %v, want %v", got, want)
		}
	})

	// Writes after the export: two in the moving slots, one outside.
	if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: in[0], Vector: randVec(r, testDim)}, {ID: out[0], Vector: randVec(r, testDim)}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteBatch(ctx, &client.DeleteRequest{IDs: []string{in[1], out[1]}}); err != nil {
		t.Fatal(err)
	}

	t.Run("wal tail of the slots", func(t *testing.T) {
		code, body := do(t, http.MethodGet, hs.URL+"/v1/internal/slots:wal?from=2&until=3&slots="+moving.String(), "", nil)
		if code != http.StatusOK {
			t.Fatalf("slot wal = %d %s", code, body)
		}
		recs := readSlotRecords(t, body)
		if len(recs) != 3 || recs[0].Seq != 2 || len(recs[0].Upserts) != 1 || recs[0].Upserts[0].ID != in[0] ||
			recs[1].Seq != 3 || fmt.Sprint(recs[1].Deletes) != fmt.Sprint([]string{in[1]}) || recs[2].Seq != 3 {
			t.Fatalf("slot wal records %+v", recs)
		}
	})

	t.Run("client streams", func(t *testing.T) {
		n := 0
		seq, err := c.ExportSlots(ctx, moving.String(), func(r client.SlotRecord) error { n += len(r.Upserts); return nil })
		if err != nil || seq != 3 || n != 19 {
			t.Fatalf("ExportSlots = seq %d, %d vectors, %v", seq, n, err)
		}
		var got []uint64
		err = c.SlotWAL(ctx, moving.String(), 1, 3, func(r client.SlotRecord) error { got = append(got, r.Seq); return nil })
		if err != nil || fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("SlotWAL = %v, %v", got, err)
		}
		if err := c.SlotWAL(ctx, moving.String(), 3, 2, func(client.SlotRecord) error { return errors.New("called") }); err != nil {
			t.Fatalf("empty SlotWAL range: %v", err)
		}
		// Following the live log: heartbeats arrive until the context ends.
		fctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
		defer cancel()
		beats := 0
		err = c.SlotWAL(fctx, moving.String(), 4, 0, func(r client.SlotRecord) error {
			if len(r.Upserts) == 0 && len(r.Deletes) == 0 && r.Seq == 3 {
				beats++
			}
			return nil
		})
		if !errors.Is(err, context.DeadlineExceeded) || beats < 2 {
			t.Fatalf("live SlotWAL: %d heartbeats, %v", beats, err)
		}
	})

	t.Run("freeze refuses writes with moved", func(t *testing.T) {
		// The shard learns epoch 7 from a table (or POST slots): a freeze never moves it.
		if _, err := c.SetSlots(ctx, &client.SlotsRequest{Slots: slots.All().String(), Epoch: 7}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.FreezeSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 6}); !client.IsCode(err, client.CodeConflict) {
			t.Fatalf("freeze at an older epoch: %v", err)
		}
		st, err := c.FreezeSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 7})
		if err != nil || st.Frozen != "0-1023" || st.Epoch != 7 || st.Seq != 3 {
			t.Fatalf("freeze = %+v, %v", st, err)
		}
		seq := s.store.Applied()
		_, err = c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: out[2], Vector: randVec(r, testDim)}, {ID: in[2], Vector: randVec(r, testDim)}}})
		var ae *client.APIError
		if !client.IsCode(err, client.CodeMoved) || !asAPI(err, &ae) || ae.Epoch != 7 || ae.HTTPStatus != http.StatusConflict {
			t.Fatalf("write to frozen slot: %v", err)
		}
		// Moving an id out of a frozen slot (a new partition elsewhere) changes that slot.
		if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: in[4], Partition: out[0], Vector: randVec(r, testDim)}}}); !client.IsCode(err, client.CodeMoved) {
			t.Fatalf("moving an id out of a frozen slot: %v", err)
		}
		if _, err := c.Delete(ctx, in[3], ""); !client.IsCode(err, client.CodeMoved) {
			t.Fatalf("delete in frozen slot: %v", err)
		}
		if s.store.Applied() != seq {
			t.Fatal("a refused write changed the shard")
		}
		if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: out[2], Vector: randVec(r, testDim)}}}); err != nil {
			t.Fatalf("write outside the frozen slots: %v", err)
		}
		if _, err := c.Search(ctx, &client.SearchRequest{Vector: vecs[0].Vector, K: 5}); err != nil {
			t.Fatalf("reads must go on: %v", err)
		}
	})

	t.Run("drop", func(t *testing.T) {
		before := s.store.Len()
		st, err := c.DropSlots(ctx, &client.SlotsRequest{Slots: moving.String(), Epoch: 8})
		if err != nil || st.Dropped != 19 || st.Owned != "1024-4095" || st.Frozen != "" || st.Epoch != 7 {
			t.Fatalf("drop = %+v, %v", st, err)
		}
		if s.store.Len() != before-19 {
			t.Fatalf("%d vectors after drop, want %d", s.store.Len(), before-19)
		}
		for _, id := range in {
			if _, ok := get(t, s.store, id, s.store.hidden.Load()); ok {
				t.Fatalf("%s survived the drop", id)
			}
		}
		if _, err := c.Upsert(ctx, &client.UpsertRequest{Vectors: []client.Vector{{ID: in[5], Vector: randVec(r, testDim)}}}); !client.IsCode(err, client.CodeMoved) {
			t.Fatalf("write to a dropped slot: %v", err)
		}
	})

	t.Run("set slots", func(t *testing.T) {
		if _, err := c.SetSlots(ctx, &client.SlotsRequest{Slots: "0-10", Epoch: 3}); !client.IsCode(err, client.CodeConflict) {
			t.Fatalf("older epoch accepted: %v", err)
		}
		if _, err := c.SetSlots(ctx, &client.SlotsRequest{Slots: "0-99999"}); !client.IsCode(err, client.CodeInvalidArgument) {
			t.Fatalf("bad set accepted: %v", err)
		}
		st, err := c.SetSlots(ctx, &client.SlotsRequest{Slots: "0-4095", Frozen: "5", Epoch: 9})
		if err != nil || st.Owned != "0-4095" || st.Frozen != "5" || st.Epoch != 9 {
			t.Fatalf("set = %+v, %v", st, err)
		}
		reloaded, err := loadSlots(filepath.Join(cfg.DataDir, "slots.json"))
		if err != nil || reloaded.snapshot() != (client.SlotsState{Owned: "0-4095", Frozen: "5", Epoch: 9}) {
			t.Fatalf("persisted slot state %+v, %v", reloaded.snapshot(), err)
		}
	})

	t.Run("bad slot requests", func(t *testing.T) {
		for _, path := range []string{"/v1/internal/slots:export?slots=5-2", "/v1/internal/slots:wal?slots=1&from=0", "/v1/internal/slots:wal?slots=1&from=1&until=x"} {
			if code, body := do(t, http.MethodGet, hs.URL+path, "", nil); code != http.StatusBadRequest {
				t.Fatalf("%s = %d %s", path, code, body)
			}
		}
	})
}

func asAPI(err error, target **client.APIError) bool {
	ae, ok := err.(*client.APIError)
	if ok {
		*target = ae
	}
	return ok
}

func TestRoutingFile(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RoutingFile = filepath.Join(t.TempDir(), "routing.json")
	cfg.ShardIndex = 1
	s, _ := newTestServer(t, cfg)
	tab := slots.Even(4)
	tab.Epoch = 5
	b, _ := json.Marshal(tab)
	if err := os.WriteFile(cfg.RoutingFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.watchRoutingFile(ctx, 10*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for s.slots.currentEpoch() != 5 {
		if time.Now().After(deadline) {
			t.Fatal("routing file not adopted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.slots.snapshot().Owned; got != "1024-2047" {
		t.Fatalf("owned %s, want 1024-2047", got)
	}
}

func TestRoutingConfigMap(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.ShardIndex = 2
	s, _ := newTestServer(t, cfg)
	s.cfg.Index = "products" // set after New, which would build an in-cluster client
	tab := slots.Even(4)
	tab.Epoch = 3
	b, _ := json.Marshal(tab)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "products-routing", Namespace: "ns"},
		Data: map[string]string{slots.ConfigMapKey: string(b)}}
	other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other-routing", Namespace: "ns"},
		Data: map[string]string{slots.ConfigMapKey: `{"hash":"xxh64","epoch":99,"shards":1,"ranges":[{"from":0,"to":4095,"shard":0}]}`}}
	cs := fake.NewClientset(cm, other)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.watchRoutingConfigMap(ctx, cs, "ns") }()
	defer func() { cancel(); <-done }()
	waitFor := func(epoch uint64, owned string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for s.slots.currentEpoch() != epoch || s.slots.snapshot().Owned != owned {
			if time.Now().After(deadline) {
				t.Fatalf("slots %+v, want epoch %d owning %s", s.slots.snapshot(), epoch, owned)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(3, "2048-3071")

	// A move to this shard at a newer epoch is adopted; an older table is not.
	tab.Move(slots.Range(0, 9), 2)
	b, _ = json.Marshal(tab)
	cm.Data[slots.ConfigMapKey] = string(b)
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(4, "0-9,2048-3071")
	stale := slots.Even(4)
	b, _ = json.Marshal(stale)
	cm.Data[slots.ConfigMapKey] = string(b)
	if _, err := cs.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	waitFor(4, "0-9,2048-3071")
}
