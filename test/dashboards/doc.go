// Package dashboards checks the Grafana dashboards shipped in charts/annshard/dashboards
// against what the components really export: it lists the metric names every panel's
// PromQL uses (MetricNames), and Missing compares them with the families of real /metrics
// scrapes (the e2e suite scrapes a shard server, a router and the operator of a running
// index). No list of metrics is kept by hand: a metric added to a panel is checked as soon
// as it is used, and one the components stop exporting fails the check.
//
// Concurrency: the functions are pure.
package dashboards
