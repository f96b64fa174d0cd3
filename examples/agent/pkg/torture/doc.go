// Package torture holds workloads that exist only to stress the tracer's
// bookkeeping: many goroutines hitting one probe from callers of their own,
// goroutines that end through runtime.Goexit so new ones reuse their g, and
// a recursion that outgrows its stack on the way down.
// Each counts its calls itself, like the rest of the agent; the counters are
// registered only when the workload runs, so the agent's default report
// lists only the functions it always calls.
package torture
