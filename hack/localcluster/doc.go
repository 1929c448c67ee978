// Command localcluster runs a small real Kubernetes on one machine without Docker:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler from bin/k8s, and
// a node agent that runs pods as local processes on their own loopback IPs, each in
// its own mount namespace.
//
//	localcluster up       start everything detached, wait until pods can run
//	localcluster down     stop every process it started, by PID
//	localcluster status   show the processes, the node and the pods
//	localcluster logs POD [-c CONTAINER] [-n NAMESPACE] [-f]
//
// State lives in .local/ at the repository root (kubeconfig at .local/kubeconfig).
// `agent` and `init` are internal subcommands: the detached node agent, and the
// per-container init it re-execs. Each invocation is one short-lived process; the
// cluster's processes coordinate only through the state directory and the API.
package main
