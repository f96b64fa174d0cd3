// Package calls turns the raw records of package probe into calls: function
// name, goroutine, wall-clock start, duration, symbolized stack, the error it
// returned (its type named from the executable, its message put together
// from the parts the probes read, as its Error method would), and the
// system calls and child processes package probe/syscalls saw in each. It
// also keeps the per-function summary a tracing session prints at the end.
package calls
