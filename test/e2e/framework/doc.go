// Package framework is what the end-to-end suite and the `make run` demo share: clients for
// any kubeconfig, waiting for an AnnIndex to become Available, reaching its router and shard
// pods by their IPs, loading a dataset and measuring recall against an exact search.
//
// Nothing here is specific to the local cluster.
// A Cluster is safe for concurrent use once built.
package framework
