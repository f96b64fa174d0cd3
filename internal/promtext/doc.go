// Package promtext reads a Prometheus /metrics page for tests and
// benchmarks: every series by its full name, labels included.
package promtext
