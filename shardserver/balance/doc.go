// Package balance chooses which replica of a shard serves a read.
//
// A [Balancer] is built for one replica set of fixed size by [New] with a [Policy]:
// RoundRobin, WeightedRoundRobin (smooth, nginx-style, weights from replica-reported
// capacity), LeastConnections, PowerOfTwoChoices, or Adaptive (a C3-style score of EWMA
// latency, outstanding requests and the replica's reported queue, decaying while a
// replica is idle so a replica that was slow is probed again and can recover).
//
// The caller drives it: [Balancer.Pick] a replica, [Balancer.Start] a request on it and
// hand the [Ticket] to [Balancer.Done] with the outcome (the balancer times the request
// itself, on its own clock); [Balancer.Report] feeds what the replica says about its load
// (polled from its /v1/load). When the replica set changes the caller builds a new
// Balancer; Done on the old one for requests already started is harmless.
//
// The package is pure: no I/O, no logging, no goroutines. Every method is safe for
// concurrent use; Pick, Start and Done are lock-free (atomics only) and allocate nothing,
// because they run once or more per query. Report may take a lock and allocate.
// Randomness and time are injectable ([WithSeed], [WithClock]) so tests are exact.
package balance
