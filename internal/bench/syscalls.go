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

// syscallModes run testdata/syscalls's loop of getppid(2): untraced, then
// with the syscall programs following the process while no traced call is
// in flight (each syscall stops at the goroutine table), then inside a
// traced call without and with them (each syscall is counted in its call).
var syscallModes = []mode{
	{name: "untraced", attach: func(*target) (func() error, error) { return func() error { return nil }, nil }},
	{name: "syscall programs, no traced call in flight", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallIdle, true) }},
	{name: "in a traced call, no syscall programs", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallLoop, false) }},
	{name: "in a traced call, syscall programs", attach: func(t *target) (func() error, error) { return attachSyscalls(t, syscallLoop, true) }},
}

// Indexes into syscallModes, for the ratios.
const (
	scUntraced = iota
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
