// Package framework is what the end-to-end suite and the `make run` demo share: clients for
// any kubeconfig, waiting for an AnnIndex to become Available, reaching its router and shard
// pods (directly by pod IP on the local cluster, through port-forwarding on kind), loading a
// dataset and measuring recall against an exact search.
//
// Nothing here is specific to the local cluster; the access mode is chosen by the caller.
// A Cluster is safe for concurrent use once built.
package framework
