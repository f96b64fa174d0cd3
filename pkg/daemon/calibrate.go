package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe/syscalls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// calibrationTarget is the function MeasureCost probes: so small that a
// traced call costs the traps and nothing else.
//
//go:noinline
func calibrationTarget(x uint64) uint64 { return x*0x9E3779B97F4A7C15 + 1 }

var calibrationSink uint64

func callCalibrationTarget(i int) { calibrationSink += calibrationTarget(uint64(i)) }

// timeRounds returns the CPU times of rounds loops of n calls of f on the
// calling thread, which the caller has locked, sorted: the traps' and BPF
// programs' cost is CPU time charged to the thread that hits them. Wall
// time would also count the time other processes ran meanwhile: on a
// loaded node it measured twice the CPU the target paid.
func timeRounds(rounds, n int, f func(int)) ([]time.Duration, error) {
	out := make([]time.Duration, rounds)
	for r := range out {
		start, err := threadCPU()
		if err != nil {
			return nil, err
		}
		for i := range n {
			f(i)
		}
		end, err := threadCPU()
		if err != nil {
			return nil, err
		}
		out[r] = end - start
	}
	slices.Sort(out)
	return out, nil
}

func threadCPU() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("calibrate: thread CPU time: %w", err)
	}
	return time.Duration(ts.Nano()), nil
}

// MeasureCost measures the CPU time one traced call costs on this node. It
// runs a session of the tracer's own probes (entry and every RET, stacks as
// configured) on a tiny function of the tracer's own process, takes the
// thread's CPU time over calls with and without them, and returns the
// difference per call.
//
// Probing the tracer itself needs no target and no child process, and it
// measures what dominates the cost everywhere: the two traps into the
// kernel and the BPF programs, which depend on the kernel, the CPU and its
// mitigations, not on the traced program (NOTES.md: 77-88 µs per entry+RET
// pair on these VMs against 4-9 ns for the untraced call).
//
// The session's reader runs meanwhile, as it does for a target: with no
// reader, the records pile up and every call wakes the reader that is not
// there, which made the calibration's calls 25% dearer than a target's.
func MeasureCost(stacks bool) (time.Duration, error) {
	const (
		perRound = 400
		rounds   = 5
	)
	name := runtime.FuncForPC(reflect.ValueOf(calibrationTarget).Pointer()).Name()

	// One thread for every timing: a goroutine moved between CPUs
	// mid-loop pays for the move.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	untraced, err := timeRounds(3, perRound, callCalibrationTarget)
	if err != nil {
		return 0, err
	}

	s, err := session.Start(session.Config{PID: os.Getpid(), Funcs: []string{name}, Stacks: stacks})
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	if len(s.Set.Probes()) != 1 {
		s.Set.Close()
		return 0, fmt.Errorf("calibrate: %d functions named %s", len(s.Set.Probes()), name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var read sync.WaitGroup
	var runErr error
	read.Go(func() { runErr = s.Run(ctx, func(*calls.Call) {}) })
	stop := func() error {
		cancel()
		read.Wait()
		if errors.Is(runErr, context.Canceled) {
			return nil
		}
		return runErr
	}

	traced, err := timeRounds(rounds, perRound, callCalibrationTarget)
	if err != nil {
		return 0, errors.Join(err, stop())
	}
	cs, err := s.ProbeCounters()
	if err = errors.Join(err, stop()); err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	if cs[0].Hits < perRound*rounds {
		return 0, errors.New("calibrate: the probe did not fire on every call")
	}
	cost := (traced[rounds/2] - untraced[0]) / perRound
	if cost <= 0 {
		return 0, errors.New("calibrate: traced calls were not slower")
	}
	return cost, nil
}

// MeasureSyscallCost measures the CPU time one run of the syscall programs
// (at a system call's entry or exit) costs a process they do not follow:
// what they cost every other process of the node, at each of its system
// calls. It times getppid(2), a system call that does next to nothing, in
// this process with the programs attached and following no process, and
// without them, and returns half the difference per call.
func MeasureSyscallCost() (time.Duration, error) {
	const (
		perRound = 20000
		rounds   = 5
	)
	getppid := func(int) { unix.Getppid() }
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	untraced, err := timeRounds(3, perRound, getppid)
	if err != nil {
		return 0, err
	}
	s, err := syscalls.Attach(syscalls.Options{})
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	defer s.Close()
	before, err := s.Runs()
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	traced, err := timeRounds(rounds, perRound, getppid)
	if err != nil {
		return 0, err
	}
	after, err := s.Runs()
	if err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	if after-before < 2*perRound*rounds {
		return 0, fmt.Errorf("calibrate: the syscall programs ran %d times over %d system calls", after-before, perRound*rounds)
	}
	cost := (traced[rounds/2] - untraced[0]) / (2 * perRound)
	if cost <= 0 {
		return 0, errors.New("calibrate: system calls were not slower with the syscall programs")
	}
	return cost, nil
}
