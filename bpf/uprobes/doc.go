// Package uprobes holds the BPF programs attached at the entry and at every
// RET of traced Go functions, and their bpf2go bindings. The generated
// objects are committed so building needs no clang; `make generate`
// rebuilds them.
package uprobes
