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
	"github.com/cilium-tracer/tracer/pkg/session"
)

// calibrationTarget is the function MeasureCost probes: so small that a
// traced call costs the traps and nothing else.
//
//go:noinline
func calibrationTarget(x uint64) uint64 { return x*0x9E3779B97F4A7C15 + 1 }

var calibrationSink uint64

// timeCalls returns the CPU time n calls take on the calling thread, which
// the caller has locked: the traps' cost is CPU time charged to the thread
// that hits them. Wall time would also count the time other processes ran
// meanwhile: on a loaded node it measured twice the CPU the target paid.
func timeCalls(n int) (time.Duration, error) {
	var sum uint64
	start, err := threadCPU()
	if err != nil {
		return 0, err
	}
	for i := range n {
		sum += calibrationTarget(uint64(i))
	}
	end, err := threadCPU()
	calibrationSink += sum
	return end - start, err
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
	untraced := time.Duration(1<<63 - 1)
	for range 3 {
		d, err := timeCalls(perRound)
		if err != nil {
			return 0, err
		}
		untraced = min(untraced, d)
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

	traced := make([]time.Duration, rounds)
	for i := range traced {
		if traced[i], err = timeCalls(perRound); err != nil {
			return 0, errors.Join(err, stop())
		}
	}
	cs, err := s.ProbeCounters()
	if err = errors.Join(err, stop()); err != nil {
		return 0, fmt.Errorf("calibrate: %w", err)
	}
	if cs[0].Hits < perRound*rounds {
		return 0, errors.New("calibrate: the probe did not fire on every call")
	}
	slices.Sort(traced)
	cost := (traced[rounds/2] - untraced) / perRound
	if cost <= 0 {
		return 0, errors.New("calibrate: traced calls were not slower")
	}
	return cost, nil
}
