// Package probe loads the BPF programs of bpf/uprobes, attaches them at the
// entry and at every RET of the chosen functions, and reads back the raw
// records and per-probe counters: with each call its captured values, read
// at the entry or (results) at the RET, and the error it returned.
package probe
