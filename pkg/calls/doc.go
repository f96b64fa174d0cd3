// Package calls turns the raw records of package probe into calls: function
// name, goroutine, wall-clock start, duration, symbolized stack. It also keeps
// the per-function summary a tracing session prints at the end.
package calls
