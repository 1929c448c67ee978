// Package agent is the local cluster's node agent: a small kubelet stand-in that
// registers one Node, keeps its Lease and Ready condition fresh, binds claims of the
// local StorageClass to host directories, and runs every pod bound to its node as
// local processes, each on its own loopback IP and in its own mount namespace (see
// package podinit).
//
// It talks to the apiserver with the cluster's admin credentials: the provisioner
// must create PersistentVolumes, which the Node authorizer never allows, and one
// identity keeps the agent simple. Pod status is still written the way a kubelet
// writes it, as a direct PATCH of pods/<p>/status with a UID precondition.
//
// Concurrency: Run owns everything it starts. Each pod has one worker goroutine
// that alone changes the pod's processes and status; each container has a runner
// goroutine plus probe goroutines that report to the worker through a channel and
// a mutex-guarded state. Run returns after every pod process has been stopped.
package agent
