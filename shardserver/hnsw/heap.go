package hnsw

// pair is a node id with its distance to the query. The candidate and result sets
// of a search are flat slices of pairs used as binary heaps: no interfaces, no
// boxing, reused across searches.
type pair struct {
	d  float32
	id uint32
}

// minHeap pops the closest pair first (the candidate set).
type minHeap []pair

func (h *minHeap) push(p pair) {
	s := append(*h, p)
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if s[parent].d <= p.d {
			break
		}
		s[i] = s[parent]
		i = parent
	}
	s[i] = p
	*h = s
}

func (h *minHeap) pop() pair {
	s := *h
	top := s[0]
	n := len(s) - 1
	last := s[n]
	s = s[:n]
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && s[c+1].d < s[c].d {
			c++
		}
		if last.d <= s[c].d {
			break
		}
		s[i] = s[c]
		i = c
	}
	if n > 0 {
		s[i] = last
	}
	*h = s
	return top
}

// maxHeap keeps the farthest pair on top (the result set, trimmed to ef).
type maxHeap []pair

func (h *maxHeap) push(p pair) {
	s := append(*h, p)
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if s[parent].d >= p.d {
			break
		}
		s[i] = s[parent]
		i = parent
	}
	s[i] = p
	*h = s
}

func (h *maxHeap) pop() pair {
	s := *h
	top := s[0]
	n := len(s) - 1
	last := s[n]
	s = s[:n]
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && s[c+1].d > s[c].d {
			c++
		}
		if last.d >= s[c].d {
			break
		}
		s[i] = s[c]
		i = c
	}
	if n > 0 {
		s[i] = last
	}
	*h = s
	return top
}

// drainAscending empties the heap into dst[:0] closest first and returns it.
func (h *maxHeap) drainAscending(dst []pair) []pair {
	n := len(*h)
	if cap(dst) < n {
		dst = make([]pair, n)
	}
	dst = dst[:n]
	for i := n - 1; i >= 0; i-- {
		dst[i] = h.pop()
	}
	return dst
}
