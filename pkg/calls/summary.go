package calls

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"text/tabwriter"
	"time"
)

// maxKept bounds the durations a Summary keeps per function; past it a
// uniform reservoir sample keeps percentiles honest in bounded memory.
const maxKept = 100_000

// A Summary accumulates per-function statistics over a session.
type Summary struct {
	funcs map[string]*FuncStats
	order []string
}

// FuncStats are one function's statistics.
type FuncStats struct {
	Func       string
	Calls      uint64 // completed calls seen
	Errors     uint64 // completed calls that returned a non-nil error
	Unfinished uint64
	Max        time.Duration
	durations  []time.Duration
	// Broken down is how many calls had a Breakdown, and where is their
	// sum.
	BrokenDown int
	where      Tally
}

// Add counts one call.
func (s *Summary) Add(c *Call) {
	if s.funcs == nil {
		s.funcs = make(map[string]*FuncStats)
	}
	f := s.funcs[c.Func]
	if f == nil {
		f = &FuncStats{Func: c.Func}
		s.funcs[c.Func] = f
		s.order = append(s.order, c.Func)
	}
	if b := c.Breakdown; b != nil {
		f.BrokenDown++
		f.where.add(b)
	}
	if c.Unfinished {
		f.Unfinished++
		return
	}
	f.Calls++
	if c.Error != nil {
		f.Errors++
	}
	f.Max = max(f.Max, c.Duration)
	if len(f.durations) < maxKept {
		f.durations = append(f.durations, c.Duration)
	} else if i := rand.Uint64N(f.Calls); i < maxKept {
		f.durations[i] = c.Duration
	}
}

// Percentile returns the q-th quantile (0 <= q <= 1) of the completed calls'
// durations by nearest rank: of n durations in increasing order, the one at
// rank ceil(q*n), counted from 1. It is always a duration that was seen, and
// p99 of fewer than 100 calls is their maximum.
func (f *FuncStats) Percentile(q float64) time.Duration {
	n := len(f.durations)
	if n == 0 {
		return 0
	}
	slices.Sort(f.durations)
	// q is a decimal fraction such as 0.99 that float64 holds only
	// approximately: an exact integer q*n must not round up a rank.
	rank := int(math.Ceil(q*float64(n) - 1e-9))
	return f.durations[min(max(rank, 1), n)-1]
}

// Funcs returns the statistics in the order functions were first seen.
func (s *Summary) Funcs() []*FuncStats {
	out := make([]*FuncStats, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.funcs[name])
	}
	return out
}

// Func returns one function's statistics, nil if it was never seen.
func (s *Summary) Func(name string) *FuncStats { return s.funcs[name] }

// Dropped holds the per-function counts only BPF knows: records lost to a
// full ring buffer, calls not sampled or under the threshold, and calls not
// followed at all.
type Dropped struct {
	Dropped, Skipped, Filtered, Untracked uint64
	// Contended calls were traced, but without their stack and captured
	// values: preempted probes held every per-CPU scratch slot they are
	// built in.
	Contended uint64
	// Unstacked calls were traced without their stack: the kernel gave
	// no user stack, or the table of stacks refused it.
	Unstacked uint64
}

// Legends of the columns that count calls missing from the others, printed
// under the table when the column is not all zero.
const (
	droppedLegend   = "dropped: calls traced but lost on the way to user space (ring buffer full)"
	untrackedLegend = "untracked: calls never followed, so neither timed nor counted as unfinished: " +
		"their goroutine already had as many traced calls in flight as the tracer follows (deep nesting or recursion), " +
		"or the goroutine table was full"
)

// Print writes the summary as a table; extra adds BPF-side counts per
// function name (may be nil).
func (s *Summary) Print(w io.Writer, extra map[string]Dropped) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	// With a breakdown, the shares of the broken-down calls' time.
	shares := false
	for _, f := range s.funcs {
		shares = shares || f.BrokenDown > 0
	}
	header := "calls\terrors\tp50\tp90\tp99\tmax\tunfinished\tdropped\tuntracked\tnot sampled\tfiltered\t"
	if shares {
		header += "cpu\trunnable\tsyscall\tblocked\t"
	}
	fmt.Fprintln(tw, header+"\tfunction")
	names := slices.Clone(s.order)
	for name := range extra {
		if s.funcs[name] == nil {
			names = append(names, name)
		}
	}
	idle := 0
	var total Dropped
	for _, name := range names {
		f := s.funcs[name]
		d := extra[name]
		if f == nil {
			if d == (Dropped{}) {
				idle++
				continue
			}
			f = &FuncStats{Func: name}
		}
		total.Dropped += d.Dropped
		total.Untracked += d.Untracked
		total.Contended += d.Contended
		total.Unstacked += d.Unstacked
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t", f.Calls, f.Errors,
			round(f.Percentile(0.5)), round(f.Percentile(0.9)), round(f.Percentile(0.99)), round(f.Max),
			f.Unfinished, d.Dropped, d.Untracked, d.Skipped, d.Filtered)
		if shares {
			fmt.Fprint(tw, f.where.shares())
		}
		fmt.Fprintf(tw, "\t%s\n", name)
	}
	if idle > 0 {
		fmt.Fprintf(tw, "(%d more probed functions were not called)\n", idle)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, name := range s.order {
		if f := s.funcs[name]; f.BrokenDown > 0 {
			fmt.Fprintf(w, "where the time of %s went, %d calls: %s\n", ShortName(name), f.BrokenDown, f.where.Breakdown())
		}
	}
	if total.Dropped > 0 {
		fmt.Fprintln(w, droppedLegend)
	}
	if total.Untracked > 0 {
		fmt.Fprintln(w, untrackedLegend)
	}
	if total.Contended > 0 {
		fmt.Fprintf(w, "%d calls were traced without their stack and captured values: probes preempted on the same CPU held every scratch slot they are built in\n", total.Contended)
	}
	if total.Unstacked > 0 {
		fmt.Fprintf(w, "%d calls were traced without their stack: the kernel gave no user stack, or the table of stacks refused it\n", total.Unstacked)
	}
	return nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d
}
