// Package syscalls holds the BPF programs at the system calls' entry and
// exit and at child processes' start, exec and exit, which find the traced call a
// goroutine's system call or child process belongs to, and their bpf2go
// bindings. The generated objects are committed so building needs no clang;
// `make generate` rebuilds them.
package syscalls
