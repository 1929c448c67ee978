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
// A SearchOptions.Filter runs on the searching goroutine during the walk; it must
// not call mutating methods of the same Index.
package hnsw
