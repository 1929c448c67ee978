package router

import (
	"container/list"
	"encoding/binary"
	"math"
	"strconv"
	"sync"

	"github.com/annshard/annshard/shardserver/client"
)

// resultCache is an LRU of search answers. Keys carry the routing epoch and the write
// sequence of every shard the query touches (see searchKey), so an entry is never found
// again once any of them moves on: invalidation is by construction, not by scanning.
// Stale entries simply age out of the LRU.
type resultCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recent
	items map[string]*list.Element
}

type cacheEntry struct {
	key  string
	hits []client.Hit // shared, never modified after insertion
}

func newResultCache(max int) *resultCache {
	if max <= 0 {
		return nil
	}
	return &resultCache{max: max, ll: list.New(), items: make(map[string]*list.Element, max)}
}

// get returns the cached hits of key. The slice is shared: callers must not modify it.
func (c *resultCache) get(key string) ([]client.Hit, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).hits, true
}

func (c *resultCache) put(key string, hits []client.Hit) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		e.Value.(*cacheEntry).hits = hits
		c.ll.MoveToFront(e)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, hits: hits})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *resultCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// searchKey builds the cache key of a query: everything that changes its answer (the
// vector's exact bits, k, ef, partition) plus the routing epoch and the known write
// sequence of each target shard. vec is the decoded query vector.
func searchKey(vec []float32, req *client.SearchRequest, epoch uint64, targets []int, seqs []uint64) string {
	b := make([]byte, 0, 4*len(vec)+len(req.Partition)+16*len(targets)+48)
	b = strconv.AppendUint(b, epoch, 10)
	for i, t := range targets {
		b = append(b, '|')
		b = strconv.AppendInt(b, int64(t), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, seqs[i], 10)
	}
	b = append(b, '|', 'k')
	b = strconv.AppendInt(b, int64(req.K), 10)
	b = append(b, 'e')
	b = strconv.AppendInt(b, int64(req.Ef), 10)
	b = append(b, 'p')
	b = strconv.AppendInt(b, int64(len(req.Partition)), 10)
	b = append(b, ':')
	b = append(b, req.Partition...)
	b = append(b, 'v')
	for _, f := range vec {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return string(b)
}
