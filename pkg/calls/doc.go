// Package calls turns the raw records of package probe into calls: function
// name, goroutine, wall-clock start, duration, symbolized stack, and the
// system calls and child processes package probe/syscalls saw in each. It
// also keeps the per-function summary a tracing session prints at the end.
package calls
