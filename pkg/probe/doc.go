// Package probe loads the BPF programs of bpf/uprobes, attaches them at the
// entry and at every RET of the chosen functions, and reads back the raw
// records and per-probe counters.
package probe
