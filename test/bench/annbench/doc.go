// Command annbench measures annshard's HNSW index the way people judge ANN indexes: build
// time, memory, and for a sweep of ef the recall@k against exact ground truth, the
// throughput on one and on all cores, latency percentiles, and the speed-up over an exact
// scan of the same data.
//
//	annbench -base B.fvecs -query Q.fvecs [-gt G.ivecs] -k 10 -m 16 -efc 200 -ef 10,20,40,80 [-threads N] [-json]
//	annbench -gen n,dim,clusters,seed [-nq 1000] ...
//
// plus -metric L2|InnerProduct|Cosine, -quant int8 [-rerank] to compare quantized
// search with float32 in one run, and -partitions for searches confined to a partition. Files are TEXMEX: .fvecs (float32), .bvecs (uint8)
// and .ivecs (ground-truth ids, at least k per query); without -gt the ground truth is
// computed exactly by brute force on all threads.
//
// The flags and the -json output are a fixed interface: results are compared across
// versions and machines by tools outside this repository. With -json the output is only
// JSON, one object per line:
//
//	{"build":{"seconds1":..,"secondsAll":..,"bytesPerVector":..}}
//	{"ef":..,"recall":..,"qps1":..,"qpsAll":..,"p50us":..,"p99us":..}   (one per ef)
//	{"bruteQps1":..}
//
// With -quant int8 there is a build line per index and an ef line per index (and per
// re-ranking setting) and ef, each naming it; qps1Cpu is qps1 per CPU-second of the
// process (user + system), steadier than the wall-clock rate on a shared machine:
//
//	{"build":{"seconds1":..,"secondsAll":..,"bytesPerVector":..,"quant":"float32"|"int8"}}
//	{"ef":..,"recall":..,"qps1":..,"qpsAll":..,"p50us":..,"p99us":..,"quant":..,"rerank":..,"qps1Cpu":..}
//
// # What is measured
//
// The index is built twice: with -threads goroutines (secondsAll), then with one
// (seconds1). Searches run on the 1-thread build, whose graph depends only on the data and
// the seed, so recall is reproducible; bytesPerVector is its MemoryBytes over n. For each
// ef a warm-up pass over the queries gives recall@k; then one goroutine repeats the query
// set, timing each query, until at least a second has passed (qps1, p50us, p99us); then
// -threads goroutines split the query set the same way (qpsAll). bruteQps1 is an exact
// scan of the base by one goroutine, over as many queries as fit in a second. The
// distances are those of the index: squared L2, and 1 - dot for InnerProduct and for
// Cosine (on normalised vectors).
//
// -partitions then confines searches to partitions of 0.1 %, 1 %, 10 % and 50 % of the
// base (keys drawn with a fixed seed; shares with fewer than k keys are left out), for
// each index and ef: the recall against the exact neighbours within the partition, and
// single-thread QPS (per wall and per CPU-second) of the index's planned search
// (hnsw.Index.SearchSubset), of an exact scan of the partition and of a filtered walk
// with ef/share, each forced. "scanned" is the share of queries the planner scanned. One
// JSON line per row, before the bruteQps1 line:
//
//	{"partition":{"quant":..,"share":..,"keys":..,"ef":..,"scanned":..,"recall":..,"qps1":..,"qps1Cpu":..,
//	              "scanQps1":..,"scanQps1Cpu":..,"walkRecall":..,"walkQps1":..,"walkQps1Cpu":..}}
//
// # Quantized search
//
// -quant int8 builds a second index with hnsw.Int8 (one byte per dimension in the graph,
// float32 vectors in a file mapped through the page cache) after the float32 one, and
// sweeps the ef values over float32, int8, and with -rerank int8 with exact float32
// re-ranking of the candidates, all in one run, so the ratios compare like with like.
// bytesPerVector is the index's MemoryBytes: for int8 it leaves out the float32 vector
// file, which the kernel keeps in (and evicts from) the page cache.
//
// # Concurrency
//
// The command runs one phase at a time. Within the parallel build, the ground truth and the
// all-core search, goroutines share only an atomic work counter, read-only vectors and the
// first error; the index must allow concurrent Add, and concurrent searches through
// separate searchers (one per goroutine, see index.go).
package main
