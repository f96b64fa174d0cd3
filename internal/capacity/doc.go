// Package capacity models what a fleet of tracer daemons asks of
// ClickHouse: spans and bytes per second, INSERTs per second, reconnects
// after a fleet-wide restart, and the cluster that absorbs them, from
// per-node figures measured on the example agent and ClickHouse's published
// sizing guidance. docs/capacity.md is its output (Markdown); the fleet
// simulation in cmd/tracer checks its aggregate rate.
package capacity
