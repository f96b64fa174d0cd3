package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumlab"
	"github.com/cilium-tracer/tracer/internal/promtext"
)

// What the budget benchmark traces with the daemon at its defaults: the
// regenerations, and a function that runs in bursts of 8,000-17,600
// calls/s while they last (the agent decodes JSON).
var budgetFuncs = slices.Concat(regenFuncs, []string{"encoding/json.stateInString"})

// regenFuncs run only while endpoints regenerate: with none asked for, a
// daemon tracing them is idle, hit only by the agent's own occasional
// regeneration (45 hits in a minute here).
var regenFuncs = []string{
	"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate*",
	"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF",
}

// budgetRounds is how often each pod is asked to regenerate per workload:
// about 70 s of regenerations here, as in the measurement.
const budgetRounds = 15

// A budgetRun is one workload on the real agent.
type budgetRun struct {
	// Budget is the daemon's budget_percent, 0 for an untraced run.
	Budget     float64
	Wall       time.Duration
	Agent      time.Duration // the agent's CPU time over the workload
	Daemon     time.Duration // the daemon's CPU time over the workload
	Regen      float64       // cilium's summed regeneration time, seconds
	Regens     int           // regenerations cilium counted
	Target     float64       // the daemon's own account of its cost to the agent, CPU seconds
	Self       float64       // the daemon's own account of its CPU time, seconds
	Throttles  float64       // governor decisions over the workload
	Readmits   float64
	Trips      float64
	OverBudget float64 // tracer_overhead_over_budget at the end
}

type budgetResult struct {
	Version string
	Runs    []budgetRun
	// Idle is the daemon tracing regenFuncs with no regeneration asked
	// for; Quiet the daemon tracing budgetFuncs then, its hot function
	// hit by the agent's background JSON.
	Idle, Quiet idleRun
}

// An idleRun is the daemon's CPU time over Wall, and the hits its probes
// took meanwhile.
type idleRun struct {
	CPU, Wall time.Duration
	Hits      float64
}

// idleSpan is how long the daemon's idle CPU is measured.
const idleSpan = time.Minute

// The daemon runs at its default budget, and at a budget of a whole CPU:
// at the default the added CPU is below the untraced runs' own spread, so
// only the large budget can check the daemon's account of its cost
// against a measurement.
const (
	defaultBudget = 1
	wholeBudget   = 100
)

// benchBudget runs the same bursty workload on the real agent, untraced
// and under tracer daemon at its default settings, interleaved, reps
// times each. CPU times come from /proc/PID/stat of the agent and the
// daemon; the agent's regeneration times from its own metrics.
func benchBudget(ctx context.Context, dir string, reps int, log io.Writer) (budgetResult, error) {
	bins, err := ciliumlab.Build(ctx, ciliumlab.Pinned, log)
	if err != nil {
		return budgetResult{}, err
	}
	root, err := repoRoot()
	if err != nil {
		return budgetResult{}, err
	}
	tracer := filepath.Join(dir, "tracer")
	build := exec.Command("go", "build", "-o", tracer, "./cmd/tracer")
	build.Dir = root
	if b, err := build.CombinedOutput(); err != nil {
		return budgetResult{}, fmt.Errorf("build tracer: %w\n%s", err, b)
	}
	lab, err := ciliumlab.Start(ctx, ciliumlab.Config{Binaries: bins, Stripped: true, Pods: 3, Log: log})
	if err != nil {
		return budgetResult{}, err
	}
	defer lab.Close()
	res := budgetResult{Version: bins.Version}
	// A first workload is slower than the next ones (the agent's caches,
	// the compiler's): it warms up, uncounted.
	if _, err := budgetWorkload(ctx, lab, tracer, dir, 0); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	for rep := range reps {
		for _, budget := range []float64{0, defaultBudget, wholeBudget} {
			r, err := budgetWorkload(ctx, lab, tracer, dir, budget)
			if err != nil {
				return res, fmt.Errorf("repetition %d: %w", rep+1, err)
			}
			mode := "untraced   "
			if budget > 0 {
				mode = fmt.Sprintf("daemon %3.0f%%", budget)
			}
			fmt.Fprintf(log, "  %d %s wall %.1f s, agent %.2f s (%.2f%%), daemon %.2f s, %d regenerations %.3f s; daemon's account: target %.2f s, self %.2f s; throttles %.0f, readmits %.0f, trips %.0f, over budget %.0f\n",
				rep+1, mode, r.Wall.Seconds(), r.Agent.Seconds(), 100*r.Agent.Seconds()/r.Wall.Seconds(), r.Daemon.Seconds(),
				r.Regens, r.Regen, r.Target, r.Self, r.Throttles, r.Readmits, r.Trips, r.OverBudget)
			res.Runs = append(res.Runs, r)
		}
	}
	for _, m := range []struct {
		name  string
		funcs []string
		run   *idleRun
	}{{"idle", regenFuncs, &res.Idle}, {"quiet agent, hot function traced", budgetFuncs, &res.Quiet}} {
		r, err := budgetIdle(ctx, lab, tracer, dir, m.funcs)
		if err != nil {
			return res, err
		}
		*m.run = r
		fmt.Fprintf(log, "  %s: daemon %.3f s over %.0f s (%.3f%%), %.0f hits\n",
			m.name, r.CPU.Seconds(), r.Wall.Seconds(), 100*r.CPU.Seconds()/r.Wall.Seconds(), r.Hits)
	}
	return res, nil
}

// budgetIdle measures the CPU of a daemon tracing funcs at the default
// budget while the agent does nothing it was asked to.
func budgetIdle(ctx context.Context, lab *ciliumlab.Lab, tracer, dir string, funcs []string) (idleRun, error) {
	var res idleRun
	if err := lab.WaitQuiet(ctx); err != nil {
		return res, err
	}
	d, err := startBudgetDaemon(ctx, tracer, dir, lab.AgentPID(), defaultBudget, funcs)
	if err != nil {
		return res, err
	}
	defer d.stop()
	// Past the start: symbols, the cost measurement, the first rates.
	time.Sleep(10 * time.Second)
	hits := func() (float64, error) {
		m, err := d.metrics()
		var n float64
		for k, v := range m {
			if strings.HasPrefix(k, "tracer_probe_hits_total{") {
				n += v
			}
		}
		return n, err
	}
	h0, err := hits()
	if err != nil {
		return res, err
	}
	c0, err := procCPU(d.cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	start := time.Now()
	time.Sleep(idleSpan)
	c1, err := procCPU(d.cmd.Process.Pid)
	if err != nil {
		return res, err
	}
	res.CPU, res.Wall = c1-c0, time.Since(start)
	h1, err := hits()
	res.Hits = h1 - h0
	return res, err
}

// budgetWorkload regenerates every pod budgetRounds times from a quiet
// point to the next, traced by a daemon with budget started before, or,
// with budget 0, not at all.
func budgetWorkload(ctx context.Context, lab *ciliumlab.Lab, tracer, dir string, budget float64) (budgetRun, error) {
	r := budgetRun{Budget: budget}
	if err := lab.WaitQuiet(ctx); err != nil {
		return r, err
	}
	var d *budgetDaemon
	if budget > 0 {
		var err error
		if d, err = startBudgetDaemon(ctx, tracer, dir, lab.AgentPID(), budget, budgetFuncs); err != nil {
			return r, err
		}
		defer d.stop()
	}
	m0, err := lab.Metrics(ctx)
	if err != nil {
		return r, err
	}
	var d0 map[string]float64
	if d != nil {
		if d0, err = d.metrics(); err != nil {
			return r, err
		}
	}
	start := time.Now()
	a0, err := procCPU(lab.AgentPID())
	if err != nil {
		return r, err
	}
	var t0 time.Duration
	if d != nil {
		if t0, err = procCPU(d.cmd.Process.Pid); err != nil {
			return r, err
		}
	}
	if err := lab.Regenerate(ctx, budgetRounds); err != nil {
		return r, err
	}
	if err := lab.WaitQuiet(ctx); err != nil {
		return r, err
	}
	a1, err := procCPU(lab.AgentPID())
	if err != nil {
		return r, err
	}
	r.Wall, r.Agent = time.Since(start), a1-a0
	if d != nil {
		t1, err := procCPU(d.cmd.Process.Pid)
		if err != nil {
			return r, err
		}
		r.Daemon = t1 - t0
		d1, err := d.metrics()
		if err != nil {
			return r, err
		}
		r.Target = d1["tracer_overhead_target_seconds_total"] - d0["tracer_overhead_target_seconds_total"]
		r.Self = d1["tracer_overhead_self_seconds_total"] - d0["tracer_overhead_self_seconds_total"]
		dec := `tracer_governor_decisions_total{action="%s"}`
		r.Throttles = d1[fmt.Sprintf(dec, "throttle")] - d0[fmt.Sprintf(dec, "throttle")]
		r.Readmits = d1[fmt.Sprintf(dec, "readmit")] - d0[fmt.Sprintf(dec, "readmit")]
		r.Trips = d1[fmt.Sprintf(dec, "trip")] - d0[fmt.Sprintf(dec, "trip")]
		r.OverBudget = d1["tracer_overhead_over_budget"]
	}
	m1, err := lab.Metrics(ctx)
	if err != nil {
		return r, err
	}
	r.Regen = m1.TotalSeconds - m0.TotalSeconds
	r.Regens = m1.Completed() - m0.Completed()
	return r, nil
}

// procCPU is a process's user and system time, all threads, from
// /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: the fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q %q", pid, f[11], f[12])
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz, nil
}

// budgetDaemon is tracer daemon as a process of its own.
type budgetDaemon struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	mu     sync.Mutex
	stderr strings.Builder
}

func (d *budgetDaemon) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.Write(p)
}

func (d *budgetDaemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// startBudgetDaemon starts tracer daemon on pid with its governor's
// defaults but budget, and waits until it traces.
func startBudgetDaemon(ctx context.Context, tracer, dir string, pid int, budget float64, funcs []string) (*budgetDaemon, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	var probes strings.Builder
	for _, fn := range funcs {
		fmt.Fprintf(&probes, "  - func: %q\n", fn)
	}
	cfg := fmt.Sprintf("target: {pid: %d}\nprobes:\n%sexporters:\n  - json: {path: %q}\njitter: {start: 0s, reattach: 0s}\nmetrics: {listen: %q}\ngovernor: {budget_percent: %g}\n",
		pid, probes.String(), filepath.Join(dir, "spans.json"), addr, budget)
	path := filepath.Join(dir, "daemon.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	d := &budgetDaemon{cmd: exec.Command(tracer, "daemon", "--config", path), url: "http://" + addr, exited: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = io.Discard, d
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(d.log(), "msg=tracing") {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("tracer daemon exited: %s", d.log())
		case <-deadline:
			d.stop()
			return nil, fmt.Errorf("tracer daemon not tracing after 2 minutes: %s", d.log())
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return d, nil
}

func (d *budgetDaemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(time.Minute):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// metrics reads the daemon's /metrics, series by series.
func (d *budgetDaemon) metrics() (map[string]float64, error) {
	return promtext.Get(d.url + "/metrics")
}

// budgetSection reports the budget benchmark.
func budgetSection(b budgetResult) section {
	var untraced, traced, whole []budgetRun
	for _, r := range b.Runs {
		switch r.Budget {
		case 0:
			untraced = append(untraced, r)
		case defaultBudget:
			traced = append(traced, r)
		case wholeBudget:
			whole = append(whole, r)
		}
	}
	s := section{Title: fmt.Sprintf("The daemon's budget on the real cilium-agent %s: %d regeneration rounds of 3 pods, untraced and `tracer daemon` at its defaults (budget %d%%), and at a budget of %d%%, on %s, %d interleaved repetitions",
		b.Version, budgetRounds, defaultBudget, wholeBudget, strings.Join(budgetFuncs, ", "), len(traced))}
	if len(untraced) == 0 || len(traced) == 0 || len(whole) == 0 {
		return s
	}
	rate := func(r budgetRun) float64 { return r.Agent.Seconds() / r.Wall.Seconds() }
	var base, baseRegen, baseRegens float64
	for _, r := range untraced {
		base += rate(r) / float64(len(untraced))
		baseRegen += r.Regen / float64(len(untraced))
		baseRegens += float64(r.Regens) / float64(len(untraced))
	}
	rng := func(runs []budgetRun, f func(budgetRun) float64, format string) string {
		lo, hi := f(runs[0]), f(runs[0])
		for _, r := range runs {
			lo, hi = min(lo, f(r)), max(hi, f(r))
		}
		return fmt.Sprintf(format+" - "+format, lo, hi)
	}
	spread := func(runs []budgetRun, f func(budgetRun) float64) float64 {
		lo, hi := f(runs[0]), f(runs[0])
		for _, r := range runs {
			lo, hi = min(lo, f(r)), max(hi, f(r))
		}
		return hi - lo
	}
	added := func(r budgetRun) float64 { return 100 * (rate(r) - base + r.Daemon.Seconds()/r.Wall.Seconds()) }
	// The added CPU measured: the agent's over the untraced mean rate,
	// and the daemon's own.
	measured := func(r budgetRun) float64 { return (rate(r)-base)*r.Wall.Seconds() + r.Daemon.Seconds() }
	account := func(r budgetRun) float64 { return 100 * (r.Target + r.Self) / measured(r) }
	worst := 0.0
	for _, r := range traced {
		worst = max(worst, added(r))
	}
	// Over the repetitions together, the agent's run-to-run noise, as
	// large as the default budget's whole added CPU, averages out: the
	// verdicts take these, the per-run ranges show the noise.
	pooledAccount := func(runs []budgetRun) float64 {
		var reported, got float64
		for _, r := range runs {
			reported += r.Target + r.Self
			got += measured(r)
		}
		return reported / got
	}
	var regen float64
	for _, r := range traced {
		regen += r.Regen / float64(len(traced))
	}
	pooledRegen := regen/baseRegen - 1
	report, reportWhole := pooledAccount(traced), pooledAccount(whole)
	noise := 100 * spread(untraced, rate)
	// A pooled difference's standard error, had each traced run the
	// untraced runs' scatter: what a verdict on it can resolve.
	sdev := func(f func(budgetRun) float64, mean float64) float64 {
		if len(untraced) < 2 {
			return 0
		}
		var v float64
		for _, r := range untraced {
			v += (f(r) - mean) * (f(r) - mean)
		}
		return math.Sqrt(v/float64(len(untraced)-1)) * math.Sqrt(1/float64(len(traced))+1/float64(len(untraced)))
	}
	var wall, got float64
	for _, r := range traced {
		wall += r.Wall.Seconds()
		got += measured(r)
	}
	stderr := sdev(rate, base) * wall / got
	regenErr := sdev(func(r budgetRun) float64 { return r.Regen }, baseRegen) / baseRegen
	s.Rows = append(s.Rows,
		row{Name: "untraced: agent CPU over the workload", Value: rng(untraced, func(r budgetRun) float64 { return r.Agent.Seconds() }, "%.2f s") + " (" + rng(untraced, func(r budgetRun) float64 { return r.Wall.Seconds() }, "%.0f") + " s wall)"},
		row{Name: "untraced: spread of the agent's CPU between runs, % of one CPU", Value: fmt.Sprintf("%.2f%%", noise)},
		row{Name: "untraced: spread of the summed regeneration time between runs", Value: fmt.Sprintf("%.1f%%", 100*spread(untraced, func(r budgetRun) float64 { return r.Regen })/baseRegen)},
		row{Name: "daemon: agent CPU over the workload", Value: rng(traced, func(r budgetRun) float64 { return r.Agent.Seconds() }, "%.2f s") + " (" + rng(traced, func(r budgetRun) float64 { return r.Wall.Seconds() }, "%.0f") + " s wall)"},
		row{Name: "daemon: added agent CPU, % of one CPU", Value: rng(traced, func(r budgetRun) float64 { return 100 * (rate(r) - base) }, "%.2f%%")},
		row{Name: "daemon: the daemon's own CPU over the workload", Value: rng(traced, func(r budgetRun) float64 { return r.Daemon.Seconds() }, "%.2f s") + " (" + rng(traced, func(r budgetRun) float64 { return 100 * r.Daemon.Seconds() / r.Wall.Seconds() }, "%.2f%%") + ")"},
		row{Name: "daemon: agent + daemon added, % of one CPU", Value: rng(traced, added, "%.2f%%"), Target: "<= 1.5%", Met: verdict(worst <= 1.5)},
		row{Name: "daemon: summed regeneration time vs untraced mean, each run", Value: rng(traced, func(r budgetRun) float64 { return 100 * (r.Regen/baseRegen - 1) }, "%+.1f%%") + fmt.Sprintf(" (untraced %.2f s)", baseRegen)},
		row{Name: "daemon: summed regeneration time vs untraced, the runs together", Value: fmt.Sprintf("%+.1f%% (%.2f s vs %.2f s per run; standard error %.1f%%)", 100*pooledRegen, regen, baseRegen, 100*regenErr), Target: "within 5%", Met: verdict(abs(pooledRegen) <= 0.05)},
		row{Name: "daemon: mean regeneration time vs untraced mean", Value: rng(traced, func(r budgetRun) float64 { return 100 * (r.Regen/float64(r.Regens)/(baseRegen/baseRegens) - 1) }, "%+.1f%%") + fmt.Sprintf(" (untraced %.1f ms)", 1000*baseRegen/baseRegens)},
		row{Name: "daemon: its /metrics account (target + self) vs measured added CPU, each run", Value: rng(traced, account, "%.0f%%")},
		row{Name: "daemon: its /metrics account (target + self) vs measured added CPU, the runs together", Value: fmt.Sprintf("%.0f%% (the measure's standard error: %.0f%%)", 100*report, 100*stderr*report), Target: "within 25%", Met: verdict(abs(report-1) <= 0.25)},
		row{Name: "daemon: governor decisions per workload (throttle / readmit / trip)", Value: rng(traced, func(r budgetRun) float64 { return r.Throttles }, "%.0f") + " / " + rng(traced, func(r budgetRun) float64 { return r.Readmits }, "%.0f") + " / " + rng(traced, func(r budgetRun) float64 { return r.Trips }, "%.0f")},
		row{Name: fmt.Sprintf("daemon, budget %d%%: agent + daemon added, %% of one CPU", wholeBudget), Value: rng(whole, added, "%.2f%%")},
		row{Name: fmt.Sprintf("daemon, budget %d%%: its /metrics account (target + self) vs measured added CPU, each run", wholeBudget), Value: rng(whole, account, "%.0f%%")},
		row{Name: fmt.Sprintf("daemon, budget %d%%: its /metrics account (target + self) vs measured added CPU, the runs together", wholeBudget), Value: fmt.Sprintf("%.0f%%", 100*reportWhole), Target: "within 25%", Met: verdict(abs(reportWhole-1) <= 0.25)},
	)
	if b.Idle.Wall > 0 {
		idle := 100 * b.Idle.CPU.Seconds() / b.Idle.Wall.Seconds()
		s.Rows = append(s.Rows, row{Name: fmt.Sprintf("daemon idle: regenerate*, regenerateBPF, no regeneration asked (%.0f hits), %% of one CPU", b.Idle.Hits),
			Value: fmt.Sprintf("%.3f%% (%.2f s over %.0f s)", idle, b.Idle.CPU.Seconds(), b.Idle.Wall.Seconds()), Target: "<= 0.1%", Met: verdict(idle <= 0.1)})
	}
	if b.Quiet.Wall > 0 {
		s.Rows = append(s.Rows, row{Name: fmt.Sprintf("daemon on the quiet agent, the hot function traced too (%.0f hits), %% of one CPU", b.Quiet.Hits),
			Value: fmt.Sprintf("%.3f%% (%.2f s over %.0f s)", 100*b.Quiet.CPU.Seconds()/b.Quiet.Wall.Seconds(), b.Quiet.CPU.Seconds(), b.Quiet.Wall.Seconds())})
	}
	if worst > 1.5 {
		s.Missed = append(s.Missed, fmt.Sprintf("The agent and the daemon together took up to %.2f%% of a CPU more than untraced (target 1.5%%).", worst))
	}
	if abs(pooledRegen) > 0.05 {
		s.Missed = append(s.Missed, fmt.Sprintf("Summed regeneration time over the runs differed from untraced by %+.1f%% (target 5%%); on two shared cores the untraced runs themselves vary.", 100*pooledRegen))
	}
	if abs(report-1) > 0.25 {
		s.Missed = append(s.Missed, fmt.Sprintf("At the default budget the daemon's own account of its overhead was %.0f%% of the measured added CPU over the runs (target within 25%%); the untraced runs' own spread, %.2f%% of a CPU, puts the measure's standard error at %.0f%%.", 100*report, noise, 100*stderr*report))
	}
	if b.Idle.Wall > 0 && b.Idle.CPU.Seconds() > 0.001*b.Idle.Wall.Seconds() {
		s.Missed = append(s.Missed, fmt.Sprintf("The idle daemon took %.3f%% of a CPU (target 0.1%%).", 100*b.Idle.CPU.Seconds()/b.Idle.Wall.Seconds()))
	}
	if abs(reportWhole-1) > 0.25 {
		s.Missed = append(s.Missed, fmt.Sprintf("At a budget of %d%% the daemon's own account of its overhead was %.0f%% of the measured added CPU over the runs (target within 25%%).", wholeBudget, 100*reportWhole))
	}
	return s
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
