package slots

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// keyFamilies are the key shapes users give: sequential names, zero-padded counters,
// shared prefixes with short varying suffixes, and random keys as the reference.
func keyFamilies(n int) map[string][]string {
	fam := map[string][]string{}
	add := func(name, format string) {
		for i := range n {
			fam[name] = append(fam[name], fmt.Sprintf(format, i))
		}
	}
	add("tenantN", "tenant%d")
	add("vN", "v%d")
	add("pN", "p%d")
	add("padded", "user-%08d")
	add("prefix", "customers/eu-west/acme/orders/%d")
	add("suffix", "%d-shared-suffix")
	rng := rand.New(rand.NewPCG(1, 2))
	for range n {
		fam["random"] = append(fam["random"], fmt.Sprintf("%016x", rng.Uint64()))
	}
	return fam
}

// chiSquareCritical is the 0.999 quantile of the chi-square distribution by degrees of
// freedom: random keys exceed it one time in a thousand.
var chiSquareCritical = map[int]float64{1: 10.83, 2: 13.82, 3: 16.27, 7: 24.32, 8: 26.12, 63: 103.4}

// chiSquare of counts against an expectation per bucket.
func chiSquare(counts []int, expect func(b int) float64) float64 {
	chi := 0.0
	for b, c := range counts {
		e := expect(b)
		chi += (float64(c) - e) * (float64(c) - e) / e
	}
	return chi
}

// spreadProblems returns what is wrong with how slotOf spreads every key family over
// 2, 3 and 8 even shards (and 64 equal slot ranges), each a chi-square above the 0.999
// critical value:
//   - marginal: keys per shard, against the shard's share of the slots;
//   - serial: the pairs (shard of key 2j, shard of key 2j+1) of neighbouring keys over
//     the shards x shards cells. A linear hash like CRC32 maps keys that differ in a few
//     bits to slots that differ in a few fixed patterns, so neighbours' shards are
//     related and this one fails even where the marginal count looks even.
func spreadProblems(slotOf func(string) int) []string {
	var bad []string
	for name, keys := range keyFamilies(4000) {
		for _, shards := range []int{2, 3, 8, 64} {
			tab := Even(shards)
			share := make([]float64, shards)
			for b := range shards {
				owned := tab.SlotsOf(b)
				share[b] = float64(owned.Len()) / Count
			}
			counts := make([]int, shards)
			pairs := make([]int, shards*shards)
			for i, k := range keys {
				counts[tab.ShardOf(slotOf(k))]++
				if i%2 == 1 {
					pairs[tab.ShardOf(slotOf(keys[i-1]))*shards+tab.ShardOf(slotOf(k))]++
				}
			}
			chi := chiSquare(counts, func(b int) float64 { return float64(len(keys)) * share[b] })
			if crit := chiSquareCritical[shards-1]; chi > crit {
				bad = append(bad, fmt.Sprintf("%s over %d shards: chi-square %.1f > %.1f (counts %v)", name, shards, chi, crit, short(counts)))
			}
			if shards > 8 {
				continue // 4096 cells for 2000 pairs: too few per cell
			}
			chi = chiSquare(pairs, func(c int) float64 { return float64(len(keys)/2) * share[c/shards] * share[c%shards] })
			if crit := chiSquareCritical[shards*shards-1]; chi > crit {
				bad = append(bad, fmt.Sprintf("%s over %d shards: neighbours' shards related, chi-square %.1f > %.1f", name, shards, chi, crit))
			}
		}
	}
	return bad
}

func short(c []int) []int { return c[:min(len(c), 8)] }

// TestOfSpreadsLikeRandom: sequential and prefix-sharing keys spread over 2, 3 and 8
// shards like random keys do (the complaint: CRC32 put p0..p7 all on shard 1).
func TestOfSpreadsLikeRandom(t *testing.T) {
	for _, p := range spreadProblems(Of) {
		t.Error(p)
	}
	// The demo's partitions and a handful of tenants land on both of two shards and on
	// most of eight.
	two, eight := Even(2), Even(8)
	var onTwo, onEight [8]int
	for i := range 8 {
		onTwo[two.ShardOfKey(fmt.Sprintf("p%d", i))]++
		onEight[eight.ShardOfKey(fmt.Sprintf("tenant%d", i))]++
	}
	if onTwo[0] == 0 || onTwo[1] == 0 {
		t.Errorf("p0..p7 over 2 shards: %v", onTwo[:2])
	}
	empty := 0
	for _, c := range onEight {
		if c == 0 {
			empty++
		}
	}
	if empty > 5 {
		t.Errorf("tenant0..tenant7 over 8 shards leave %d empty: %v", empty, onEight)
	}
}

// TestSpreadCheckCatchesCRC32: the check above fails on the hash it replaced, so it can
// tell a linear hash from a mixing one.
func TestSpreadCheckCatchesCRC32(t *testing.T) {
	table := crc32.MakeTable(crc32.Castagnoli)
	old := func(key string) int { return int(crc32.Checksum([]byte(key), table) % Count) }
	problems := spreadProblems(old)
	if len(problems) == 0 {
		t.Fatal("the spread check passes CRC32C, whose sequential keys cluster: it cannot fail")
	}
	t.Logf("CRC32C fails the spread check %d times, e.g. %s", len(problems), problems[0])
}
