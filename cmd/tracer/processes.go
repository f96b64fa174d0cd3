package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// processes are the processes that ran a traced executable, in the order
// of their first call, for the summary of trace --binary.
type processes struct {
	order []int
	byPID map[int]*process
}

type process struct {
	session.Process
	summary calls.Summary // --by-process only
}

// update records what the session says of p: its first call, or its exit.
func (ps *processes) update(p session.Process) {
	if ps.byPID == nil {
		ps.byPID = map[int]*process{}
	}
	q, ok := ps.byPID[p.PID]
	if !ok || p.Exited.IsZero() && !q.Exited.IsZero() {
		// New, or its PID reused by a new process running the file.
		q = &process{}
		ps.byPID[p.PID] = q
		ps.order = append(ps.order, p.PID)
	}
	q.Process = p
}

// add counts one call of its process.
func (ps *processes) add(c *calls.Call) {
	if q := ps.byPID[c.PID]; q != nil {
		q.summary.Add(c)
	}
}

// print lists the processes, then, with byProcess, the summary of each.
func (ps *processes) print(w io.Writer, byProcess bool) error {
	fmt.Fprintf(w, "\n%d processes ran the traced executable:\n", len(ps.order))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tCOMMAND\tCONTAINER\tFIRST CALL\tEXIT")
	for _, pid := range ps.order {
		p := ps.byPID[pid]
		comm, ctr := p.Comm, p.ShortID()
		if p.Err != nil {
			comm = "? (exited before it could be read)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", pid, dash(comm), dash(ctr), p.Seen.Format("15:04:05.000"), exit(p.Process))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !byProcess {
		return nil
	}
	for _, pid := range ps.order {
		p := ps.byPID[pid]
		fmt.Fprintf(w, "\n%s:\n", p.Process)
		if err := p.summary.Print(w, nil); err != nil {
			return err
		}
	}
	return nil
}

func exit(p session.Process) string {
	switch {
	case p.Exited.IsZero():
		return "running"
	case p.ExitKnown:
		return "exited " + strconv.Itoa(p.ExitStatus)
	}
	return "exited"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
