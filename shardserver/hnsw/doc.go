// Package hnsw is the vector index of a shard: a Hierarchical Navigable Small World
// graph (Malkov & Yashunin, 2016) that answers approximate k-nearest-neighbour queries
// over float32 vectors, faithful to the paper and to hnswlib (separate efConstruction,
// 2*M links on layer 0, level multiplier 1/ln(M), the neighbour-selection heuristic on
// insert and on back-link pruning).
//
// Memory is flat: nodes have dense uint32 ids; each node's layer-0 link list, its key,
// its flags and its vector sit side by side in one fixed-stride block inside big
// chunks, so a query touches one contiguous region per visited node and the garbage
// collector sees no pointers. Upper-layer links live in a separate flat arena.
//
// Concurrency: every exported method is safe for concurrent use. Searches take no
// lock: they read link words with atomic loads. Add and Delete lock only the nodes
// whose link lists they rewrite, plus short critical sections around the key map and
// the entry point. Vacuum, which unlinks deleted nodes so that their slots can be
// reused, runs beside Add, Delete and searches (Delete starts it in the background
// past a threshold): it rewrites link lists under the same node locks as inserts,
// and frees a slot only after every search and insert that could have reached it
// has finished (an epoch scheme), so readers never see a torn vector. WriteTo and
// Freeze hold up Add and Delete only for the moment an image starts: the image is
// then written while they go on, and still describes that one moment (see Image).
//
// Config.Quantization = Int8 stores one byte per dimension in the node blocks instead
// of float32s, with a per-dimension offset and scale learned from the data (relearned
// at 32, 128, 512, 2048 and 8192 vectors if the data drifted, and at every snapshot
// after that: an index loaded from the snapshot uses the new ones). The graph is built
// and walked on the codes with integer SIMD kernels (AVX2, AVX-512BW, and AVX-512 VNNI
// where CPUID has them; a portable kernel elsewhere, all exactly equal). A query stays float32: its
// distance to a node is an integer dot product of the codes with the query scaled to
// int16 plus per-node sums, so only the stored side is rounded to 8 bits. The float32
// vectors are kept in an unlinked file (Config.VectorDir; mapped on Linux, pread
// elsewhere) that the page cache holds, not the Go heap: Get, WriteTo and, with
// Config.Rerank, the exact re-ranking of each search's candidates (those a bound on
// the quantization error leaves in the running for the k nearest) read them there,
// so Get and snapshots are always exact and re-ranked results carry float32
// distances. A snapshot holds float32 vectors under either setting, so ReadWith loads
// it under the other one too. A retrain holds off searches and writes for the moment
// it re-encodes (at most 8192 vectors).
//
// SearchSubset confines a search to a subset of keys (a shard's partition) and plans
// it: an exact scan of the subset when that is cheaper than a walk, else a walk with the
// subset as filter and ef grown to ef/share. The walk's cost is estimated from this
// index's own unfiltered walks (nodes scored per unit of ef, a sampled running average)
// times ef/share, over the share of admissible nodes; the scan's is the subset's size.
//
// A SearchOptions.Filter runs on the searching goroutine during the walk; it must
// not call mutating methods of the same Index.
package hnsw
