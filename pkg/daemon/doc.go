// Package daemon runs the tracer continuously on a node: it follows the
// target across restarts, keeps the probes' cost under a CPU budget,
// exports spans and serves Prometheus metrics. Its configuration is a YAML
// file (see Config) that SIGHUP reloads.
package daemon
