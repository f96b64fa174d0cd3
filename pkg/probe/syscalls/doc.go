// Package syscalls follows the system calls and child processes of traced
// calls: it attaches the programs of bpf/syscalls to the raw tracepoints of
// every system call, sharing the uprobe programs' goroutine table, and
// reads what they found, named.
package syscalls
