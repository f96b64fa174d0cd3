package main

import (
	"fmt"
	"io"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// Functions of testdata/syscalls.
const (
	syscallLoop = "main.loop"
	syscallIdle = "main.idle"
)

// syscallModes run testdata/syscalls's loop of getppid(2): untraced; with
// the syscall programs following another process (what every process of
// the node pays: each syscall stops at the lookup of its process); following
// this one while no traced call is in flight (each syscall stops at the
// goroutine table); then inside a traced call without and with them (each
// syscall is counted in its call).
var syscallModes = []mode{
	{name: "untraced", attach: func(*target) (func() error, error) { return func() error { return nil }, nil }},
	{name: "syscall programs following another process", attach: attachOther},
	{name: "syscall programs, no traced call in flight", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallIdle, true) }},
	{name: "in a traced call, no syscall programs", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallLoop, false) }},
	{name: "in a traced call, syscall programs", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallLoop, true) }},
}

// Indexes into syscallModes, for the ratios.
const (
	scUntraced = iota
	scOther
	scIdle
	scTraced
	scFollowed
)

// syscallResult holds ns per syscall of every run, per mode.
type syscallResult struct {
	Rounds, Calls int
	NsPerCall     [][]float64 // [mode][round]
}

func (r syscallResult) median(m int) float64 { return median(r.NsPerCall[m]) }

// runSyscalls runs every mode once per round (runRounds).
func runSyscalls(bin string, rounds, n int, log io.Writer) (syscallResult, error) {
	ns, err := runRounds(bin, syscallModes, rounds, func(mode) int { return n }, log)
	return syscallResult{Rounds: rounds, Calls: n, NsPerCall: ns}, err
}

// attachOther follows the syscalls of another process, started for it.
func attachOther(t *target) (func() error, error) {
	other, err := startTarget(t.bin, 0)
	if err != nil {
		return nil, err
	}
	finish, err := attachSyscalls(other, syscallIdle, true)
	if err != nil {
		other.kill()
		return nil, err
	}
	return func() error {
		err := finish()
		other.kill()
		return err
	}, nil
}

// attachSyscalls traces fn in the target, following its syscalls if
// follow. Following, a traced loop must come back with every syscall
// counted.
func attachSyscalls(t *target, fn string, follow bool) (func() error, error) {
	var got []calls.Call
	return runSession(session.Config{PID: t.pid, Binary: t.bin, Funcs: []string{fn}, Syscalls: follow},
		func(c *calls.Call) { got = append(got, *c) },
		func(*session.Session) error {
			if fn != syscallLoop || !follow {
				return nil
			}
			if len(got) != 1 {
				return fmt.Errorf("%d calls of %s read, 1 made", len(got), fn)
			}
			n := 0
			for _, sc := range got[0].Syscalls {
				if sc.Name == "getppid" {
					n++
				}
			}
			for _, tot := range got[0].SyscallTotals {
				if tot.Name == "getppid" {
					n += tot.Count
				}
			}
			if n != t.calls {
				return fmt.Errorf("%d getppid counted in the traced call, %d made", n, t.calls)
			}
			return nil
		})
}
