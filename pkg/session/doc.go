// Package session attaches probes to one traced process and runs that
// attachment through its whole life: it opens the executable, resolves the
// functions, attaches the probes, changes them while it turns their
// records into calls, sweeps calls that never return out of the goroutine
// table, and detaches them, reporting the calls still in flight. Follow
// does this again each time the target restarts. Both `tracer trace` and
// `tracer daemon` run their probes through it.
package session
