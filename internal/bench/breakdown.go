package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// phasedFunc is the stand-in agent's function that spends known times
// computing, waiting for a lock, on a channel and in read(2) (-phased).
const phasedFunc = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regeneratePhased"

// A phasedLoad is a number of phased calls, each phase of the same length.
type phasedLoad struct {
	Calls int
	Phase time.Duration // each of computing, a lock, a channel, read(2)
}

// The breakdown's cost is measured on calls as short as the stand-in's
// default phased calls and as long as a real regenerateBPF.
func phasedLoads(quick bool) []phasedLoad {
	if quick {
		return []phasedLoad{{2, 30 * time.Millisecond}}
	}
	return []phasedLoad{{30, 30 * time.Millisecond}, {5, 500 * time.Millisecond}}
}

// A breakdownRun is one traced workload of phased calls.
type breakdownRun struct {
	Load      phasedLoad
	Breakdown bool
	Calls     int
	Hits      uint64        // entry probe hits, from the BPF counters
	Traced    time.Duration // the calls' summed durations
	Tracer    time.Duration // the tracer's whole CPU time over the run
	Samples   uint64
	Sampler   time.Duration // CPU time of the sampling thread
}

type breakdownResult struct {
	Every time.Duration
	Runs  []breakdownRun
}

// benchBreakdown traces the same phased calls of the stand-in agent with
// the breakdown's sampling and without, reps times each, interleaved, and
// measures the tracer's CPU and the probes' hits.
func benchBreakdown(root, dir string, loads []phasedLoad, reps int, log io.Writer) (breakdownResult, error) {
	res := breakdownResult{Every: session.DefaultBreakdownEvery}
	agent := filepath.Join(dir, "cilium-agent")
	build := exec.Command("go", "build", "-o", agent, "./daemon")
	build.Dir = filepath.Join(root, "examples", "agent")
	if b, err := build.CombinedOutput(); err != nil {
		return res, fmt.Errorf("build the stand-in agent: %w\n%s", err, b)
	}
	for rep := range reps {
		for _, load := range loads {
			for _, on := range []bool{false, true} {
				r, err := breakdownWorkload(agent, load, on)
				if err != nil {
					return res, fmt.Errorf("repetition %d: %w", rep+1, err)
				}
				fmt.Fprintf(log, "  %d %v phases, breakdown=%v: %d calls, %d hits, %v traced; tracer CPU %v, %d samples, sampler CPU %v\n",
					rep+1, load.Phase, on, r.Calls, r.Hits, r.Traced.Round(time.Millisecond), r.Tracer.Round(time.Millisecond), r.Samples, r.Sampler.Round(time.Millisecond))
				res.Runs = append(res.Runs, r)
			}
		}
	}
	return res, nil
}

// breakdownWorkload traces the phased calls of a fresh agent from its
// start to its exit.
func breakdownWorkload(agent string, load phasedLoad, breakdown bool) (breakdownRun, error) {
	r := breakdownRun{Load: load, Breakdown: breakdown}
	phase := load.Phase.String()
	cmd := exec.Command(agent, "-wait-start", "-workers", "0", "-phased", fmt.Sprint(load.Calls),
		"-phase-cpu", phase, "-phase-mutex", phase, "-phase-chan", phase, "-phase-syscall", phase)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready") {
		return r, errors.New("the stand-in agent did not start")
	}
	go func() {
		for lines.Scan() {
		}
	}()

	cfg := session.Config{PID: cmd.Process.Pid, Funcs: []string{phasedFunc}}
	cfg.Announce = breakdown
	s, err := session.Start(cfg)
	if err != nil {
		return r, err
	}
	defer s.Close()
	cpu0, err := selfCPU()
	if err != nil {
		return r, err
	}
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		return r, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err = s.Run(ctx, func(c *calls.Call) {
		r.Calls++
		r.Traced += c.Duration
	})
	if !errors.Is(err, session.ErrTargetExited) {
		return r, fmt.Errorf("trace: %v, want the agent to exit", err)
	}
	cpu1, err := selfCPU()
	if err != nil {
		return r, err
	}
	r.Tracer = cpu1 - cpu0
	r.Samples, r.Sampler = s.BreakdownCost()
	cs, err := s.Counters()
	if err != nil {
		return r, err
	}
	r.Hits = cs[phasedFunc].Hits
	return r, nil
}

// selfCPU is this process's user and system time so far.
func selfCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// breakdownSection reports the breakdown's cost.
func breakdownSection(b breakdownResult) section {
	s := section{Title: fmt.Sprintf("The cost of --breakdown: the stand-in agent's phased calls (computing, a lock, a channel, read(2), each phase as long) traced with and without sampling from every %v, interleaved", b.Every)}
	sum := func(runs []breakdownRun, f func(breakdownRun) float64) float64 {
		var t float64
		for _, r := range runs {
			t += f(r)
		}
		return t
	}
	hitsPerCall := func(runs []breakdownRun) float64 {
		return sum(runs, func(r breakdownRun) float64 { return float64(r.Hits) }) / sum(runs, func(r breakdownRun) float64 { return float64(r.Calls) })
	}
	tracerPerCallSecond := func(runs []breakdownRun) float64 {
		return sum(runs, func(r breakdownRun) float64 { return r.Tracer.Seconds() }) / sum(runs, func(r breakdownRun) float64 { return r.Traced.Seconds() })
	}
	var loads []phasedLoad
	for _, r := range b.Runs {
		if !slices.Contains(loads, r.Load) {
			loads = append(loads, r.Load)
		}
	}
	extraTraps := false
	for _, load := range loads {
		var off, on []breakdownRun
		for _, r := range b.Runs {
			switch {
			case r.Load != load:
			case r.Breakdown:
				on = append(on, r)
			default:
				off = append(off, r)
			}
		}
		if len(off) == 0 || len(on) == 0 {
			continue
		}
		samples := sum(on, func(r breakdownRun) float64 { return float64(r.Samples) })
		sampler := sum(on, func(r breakdownRun) float64 { return r.Sampler.Seconds() })
		traced := sum(on, func(r breakdownRun) float64 { return r.Traced.Seconds() })
		offHits, onHits := hitsPerCall(off), hitsPerCall(on)
		extraTraps = extraTraps || offHits != onHits
		name := fmt.Sprintf("%v calls, %d repetitions: ", 4*load.Phase, len(on))
		s.Rows = append(s.Rows,
			row{Name: name + "entry hits per call, without / with the breakdown", Value: fmt.Sprintf("%.2f / %.2f", offHits, onHits), Target: "equal: no extra trap", Met: verdict(offHits == onHits)},
			row{Name: name + "samples per second of a call in flight", Value: fmt.Sprintf("%.0f", samples/traced)},
			row{Name: name + "sampling thread's CPU per sample", Value: fmt.Sprintf("%.1f µs", 1e6*sampler/samples)},
			row{Name: name + "sampling thread's CPU per goroutine in flight, % of one CPU", Value: fmt.Sprintf("%.2f%%", 100*sampler/traced)},
			row{Name: name + "tracer's whole CPU per second of calls in flight, without / with (with: reading the target's runtime tables once per session too)", Value: fmt.Sprintf("%.2f%% / %.2f%% (%.2fx)",
				100*tracerPerCallSecond(off), 100*tracerPerCallSecond(on), tracerPerCallSecond(on)/tracerPerCallSecond(off))},
		)
	}
	if extraTraps {
		s.Missed = append(s.Missed, "The probes were hit more often per call with the breakdown than without.")
	}
	return s
}
