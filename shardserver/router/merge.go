package router

import (
	"cmp"
	"slices"

	"github.com/annshard/annshard/shardserver/client"
)

// mergeTopK merges per-shard answers (each nearest first) into the k nearest hits,
// keeping one hit per id: the nearest, because a vector caught mid-migration can be
// answered by two shards. Ties on distance are broken by id so the answer does not
// depend on which shard answered first.
func mergeTopK(lists [][]client.Hit, k int) []client.Hit {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	all := make([]client.Hit, 0, n)
	for _, l := range lists {
		all = append(all, l...)
	}
	slices.SortFunc(all, func(a, b client.Hit) int {
		if c := cmp.Compare(a.Distance, b.Distance); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	out := all[:0]
	seen := make(map[string]struct{}, min(n, k))
	for _, h := range all {
		if len(out) == k {
			break
		}
		if _, dup := seen[h.ID]; dup {
			continue
		}
		seen[h.ID] = struct{}{}
		out = append(out, h)
	}
	return out
}
