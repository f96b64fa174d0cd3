package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// Options are what a Daemon needs besides its configuration.
type Options struct {
	Logger *slog.Logger // default slog.Default()
	// Stdout receives the terminal and JSON exporters' output when they
	// name no file; default os.Stdout.
	Stdout io.Writer
	// Rand, when set, draws the jitter; a *rand.Rand is not safe for
	// concurrent use, so give each Daemon its own.
	Rand *rand.Rand
}

// A Daemon traces one target continuously: it follows the target across
// restarts with a session.Follow, keeps the probes' cost under budget with
// a Governor, applies reloaded configurations to the running session and
// exports spans until Run's context ends.
type Daemon struct {
	opts Options
	log  *slog.Logger

	// mu guards everything below and the current attachment's pipeline.
	mu        sync.Mutex
	cfg       Config
	exporters map[string]export.Exporter // built by New for the first attachment
	gov       *Governor
	// cost is the cost of a traced call, measured with stack capture
	// as costStacks.
	cost       time.Duration
	costStacks bool
	// syscallCost is the cost of one run of the syscall programs,
	// measured before the first session that loads them.
	syscallCost time.Duration
	cur         *attachment
	base        map[string]probe.Counters // counters of sessions ended since start
	retired     export.Stats              // stats of pipelines shut down since start
	reattaches  uint64
	wake        chan struct{}
	metrics     net.Addr

	running chan struct{} // closed once the metrics server listens

	// Only Run's goroutine, through the hooks of its session.Follow, uses
	// these: what the attach under way was configured with, and when
	// the last session ended.
	pending  map[string]export.Exporter
	maxEPS   map[string]float64
	last     container.Process
	stopped  time.Time
	attaches int
}

// attachment is the daemon's side of one session: the pipeline of its
// spans and the governor's loop over its probes.
type attachment struct {
	proc    container.Process
	s       *session.Session
	spans   *export.SpanBuilder
	pipe    *export.Pipeline
	stopGov func()
}

// ErrNoProbes: no configured pattern matched a function that can be
// probed.
var ErrNoProbes = errors.New("no function to probe")

// New checks cfg and builds its exporters, so that a daemon that would
// start half-configured does not start at all.
func New(cfg Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	exps, err := export.NewExporters(context.Background(), cfg.Exporters, opts.Stdout)
	if err != nil {
		return nil, err
	}
	return &Daemon{
		opts:      opts,
		log:       opts.Logger,
		cfg:       cfg,
		exporters: exps,
		base:      map[string]probe.Counters{},
		wake:      make(chan struct{}, 1),
		running:   make(chan struct{}),
	}, nil
}

// MetricsAddr returns the address /metrics is served on once Run has
// started serving, nil before or when metrics are off.
func (d *Daemon) MetricsAddr() net.Addr {
	<-d.running
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.metrics
}

// Run traces until ctx is done, then detaches, flushes the exporters and
// returns nil. It returns an error only when it cannot start: the metrics
// address is taken, the per-call cost cannot be measured, the target is
// ambiguous, or the first attach fails (the syscall programs' cost cannot
// be measured, among others).
func (d *Daemon) Run(ctx context.Context) error {
	defer func() {
		// Exporters built and never handed to a pipeline.
		d.mu.Lock()
		exps := d.exporters
		d.exporters = nil
		d.mu.Unlock()
		for _, m := range []map[string]export.Exporter{exps, d.pending} {
			for _, e := range m {
				e.Shutdown(context.Background())
			}
		}
		d.pending = nil
	}()
	cfg := d.config()
	stopMetrics, err := d.serveMetrics(cfg.Metrics.Listen)
	close(d.running)
	if err != nil {
		return err
	}
	defer stopMetrics()

	cost := cfg.Governor.HitCost
	if cost == 0 {
		if cost, err = MeasureCost(cfg.Stacks); err != nil {
			return err
		}
		d.log.Info("measured the cost of a traced call", "cost", cost, "stacks", cfg.Stacks)
	}
	d.mu.Lock()
	d.cost, d.costStacks = cost, cfg.Stacks
	d.gov = NewGovernor(policy(cfg.Governor, cost, 0), d.log)
	d.gov.Self = selfCPU
	d.mu.Unlock()

	if wait := Jitter(cfg.Jitter.Start, d.opts.Rand); wait > 0 {
		d.log.Info("start jitter: waiting before attaching", "wait", wait.Round(time.Millisecond), "window", cfg.Jitter.Start)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}

	fc := session.FollowConfig{
		Target:       cfg.Target.selector(),
		Backoff:      cfg.Target.backoff(),
		Wait:         true,
		Persist:      true,
		Jitter:       func() time.Duration { return Jitter(d.config().Jitter.Reattach, d.opts.Rand) },
		EveryProcess: cfg.Target.everyProcess(),
	}
	if fc.EveryProcess {
		fc.Binary = cfg.Target.Binary
	}
	err = session.Follow(ctx, fc, session.Hooks{
		Configure: d.configure,
		Call:      d.emit,
		Attached:  d.attached,
		Detached: func(s *session.Session, err error) {
			d.detached(s, err, ctx.Err() != nil)
		},
		Waiting: func(attempt int, err error, wait time.Duration) {
			switch {
			case d.attaches > 0:
				d.log.Debug("target not back yet", "attempt", attempt, "err", err, "retry_in", wait)
			case attempt == 0:
				d.log.Info("waiting for the target", "err", err)
			default:
				d.log.Debug("target not found yet", "attempt", attempt, "err", err, "retry_in", wait)
			}
		},
		Failed: func(p container.Process, err error) {
			// Stability first: never retry in a loop against a
			// running agent; try again when it restarts.
			d.log.Error("cannot attach, waiting for the target's next restart", "pid", p.PID, "err", err)
			// Back where a reload replaces them.
			d.mu.Lock()
			d.exporters, d.pending = d.pending, nil
			d.mu.Unlock()
		},
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (d *Daemon) config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func policy(g GovernorConfig, cost, syscallCost time.Duration) Policy {
	return Policy{
		Budget:      g.BudgetPercent / 100,
		Cost:        cost,
		SyscallCost: syscallCost,
		Interval:    g.Interval,
		Window:      g.Window,
		MaxPeriod:   g.MaxPeriod,
		Horizon:     g.Horizon,
		Backoff:     g.Backoff,
		TripRate:    float64(burstLimit(g.BudgetPercent/100, cost)) / probe.DefaultBreakerWindow.Seconds(),
	}
}

// breakerFactor sets where a breaker trips: at a rate of hits on one CPU
// that, sustained, would cost the target this many times the whole
// budget. An admitted probe averages at most the budget; only a burst
// trips it.
const breakerFactor = 10

// burstLimit is a probe's breaker allowance: its hits per CPU in one
// breaker window.
func burstLimit(budget float64, cost time.Duration) uint32 {
	if cost <= 0 {
		return 0
	}
	n := breakerFactor * budget * probe.DefaultBreakerWindow.Seconds() / cost.Seconds()
	return uint32(min(max(math.Ceil(n), 4), math.MaxUint32))
}

// selfCPU is the CPU time this process has used, user and system: the
// daemon's own cost, which the budget covers.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// costPerCall is the cost of a traced call in force.
func (d *Daemon) costPerCall(cfg Config) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return cmp.Or(cfg.Governor.HitCost, d.cost)
}

// configure returns the session configuration of an attach to proc, from
// the configuration in force, and readies the exporters for it.
func (d *Daemon) configure(proc container.Process) (session.Config, error) {
	cfg := d.config()
	offsets, err := loadOffsets(cfg)
	if err != nil {
		return session.Config{}, err
	}
	if d.pending == nil {
		d.mu.Lock()
		d.pending = d.exporters
		d.exporters = nil
		d.mu.Unlock()
	}
	if d.pending == nil {
		if d.pending, err = export.NewExporters(context.Background(), cfg.Exporters, d.opts.Stdout); err != nil {
			return session.Config{}, err
		}
	}
	if err := d.measureCallCost(cfg); err != nil {
		return session.Config{}, err
	}
	if cfg.Syscalls {
		if err := d.measureSyscallCost(); err != nil {
			return session.Config{}, err
		}
	}
	return session.Config{
		Binary:      cfg.Target.Binary,
		Stacks:      cfg.Stacks,
		Syscalls:    cfg.Syscalls,
		SyscallMin:  cfg.SyscallMin,
		Offsets:     offsets,
		ExpireAfter: cfg.ExpireAfter,
		Detaching:   d.detaching,
		Tripped:     d.tripped,
		Process:     d.process,
		Resolve: func(f *symbols.File) ([]probe.Probe, []session.Refused, error) {
			probes, maxEPS, err := d.resolve(f, cfg, offsets)
			if err != nil {
				return nil, nil, err
			}
			if len(probes) == 0 {
				return nil, nil, fmt.Errorf("%s: %w", cmp.Or(cfg.Target.Binary, proc.Binary), ErrNoProbes)
			}
			d.maxEPS = maxEPS
			return probes, nil, nil
		},
	}, nil
}

// measureCallCost measures the cost of a traced call again when a reload
// turned stack capture on or off since it was measured: a stack adds to
// the BPF programs' work at every call.
func (d *Daemon) measureCallCost(cfg Config) error {
	d.mu.Lock()
	known := cfg.Governor.HitCost > 0 || d.costStacks == cfg.Stacks
	d.mu.Unlock()
	if known {
		return nil
	}
	cost, err := MeasureCost(cfg.Stacks)
	if err != nil {
		return err
	}
	d.log.Info("measured the cost of a traced call", "cost", cost, "stacks", cfg.Stacks)
	d.mu.Lock()
	d.cost, d.costStacks = cost, cfg.Stacks
	d.gov.Cost = cost
	d.mu.Unlock()
	return nil
}

// measureSyscallCost measures what a run of the syscall programs costs,
// once, before the first session that loads them: at start, or at the
// first attach after a reload turned them on. The governor counts their
// runs at that cost.
func (d *Daemon) measureSyscallCost() error {
	d.mu.Lock()
	known := d.syscallCost > 0
	d.mu.Unlock()
	if known {
		return nil
	}
	cost, err := MeasureSyscallCost()
	if err != nil {
		return err
	}
	d.log.Info("measured the cost of the syscall programs to the node", "per_run", cost, "per_system_call", 2*cost)
	d.mu.Lock()
	d.syscallCost = cost
	d.gov.SyscallCost = cost
	d.mu.Unlock()
	return nil
}

// attached starts a pipeline for the spans of a new session and puts its
// probes under the governor.
func (d *Daemon) attached(s *session.Session, proc container.Process, restarted bool) {
	if s.GoidErr != nil {
		// Without the goid offset the probes pair calls by g address,
		// which is no goroutine ID: the spans leave goroutine.id out.
		d.log.Warn("goroutine IDs unknown", "err", s.GoidErr)
	}
	a := &attachment{proc: proc, s: s}
	a.pipe = d.pipeline(d.config(), a, d.pending)
	d.pending = nil
	probes := s.Probes()

	d.mu.Lock()
	ids := map[string]int{}
	for id, p := range probes {
		ids[p.Func.Name] = id
		d.gov.Add(p.Func.Name, id, p.Config, d.maxEPS[p.Func.Name])
	}
	d.gov.Keep(ids)
	d.cur = a
	if restarted {
		d.reattaches++
	}
	d.mu.Unlock()
	a.stopGov = d.govern(s)

	switch {
	case d.config().Target.everyProcess():
		d.log.Info("tracing every process that runs the file", "binary", s.Binary, "probes", len(probes), "mode", kernel.Probe().Describe(s.Set.Mode()))
	case d.attaches == 0:
		d.log.Info("tracing", "pid", proc.PID, "target", proc.String(), "probes", len(probes), "mode", kernel.Probe().Describe(s.Set.Mode()))
	case restarted:
		d.log.Info("target restarted: re-attached",
			"old_pid", d.last.PID, "pid", proc.PID, "binary_changed", !proc.SameBinary(d.last),
			"probes", len(probes), "after", time.Since(d.stopped).Round(time.Millisecond))
	default:
		d.log.Info("re-attached", "pid", proc.PID, "probes", len(probes))
	}
	d.attaches++
	d.last = proc
}

// process hears of a process running the traced file, when every process
// that runs it is traced: its spans name it.
func (d *Daemon) process(p session.Process) {
	d.mu.Lock()
	a := d.cur
	d.mu.Unlock()
	if !p.Exited.IsZero() {
		d.log.Debug("traced process exited", "pid", p.PID, "exit_status", p.ExitStatus, "exit_known", p.ExitKnown)
		return
	}
	d.log.Debug("tracing a new process", "pid", p.PID, "process", p.String())
	if a != nil {
		a.spans.AddProcess(p.PID, p.Comm, p.ContainerID)
	}
}

// tripped hands a breaker's trip to the governor, which detaches the probe
// at once.
func (d *Daemon) tripped(id int) {
	d.mu.Lock()
	d.gov.Trip(id)
	d.mu.Unlock()
	d.poke()
}

// govern runs the governor over s's probes until the returned function
// is called.
func (d *Daemon) govern(s *session.Session) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			d.mu.Lock()
			next := d.gov.Next()
			d.mu.Unlock()
			t := time.NewTimer(time.Until(next))
			select {
			case <-quit:
				t.Stop()
				return
			case <-d.wake:
				t.Stop()
			case <-t.C:
				d.mu.Lock()
				err := d.gov.Tick(time.Now(), s)
				d.mu.Unlock()
				if err != nil {
					d.log.Warn("governor", "err", err)
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// detaching stops the governor before the session removes the probes, and
// logs how long that took.
func (d *Daemon) detaching(uprobes int) func() {
	d.mu.Lock()
	a := d.cur
	d.mu.Unlock()
	a.stopGov()
	start := time.Now()
	return func() {
		d.log.Info("probes detached", "uprobes", uprobes, "took", time.Since(start).Round(time.Millisecond))
	}
}

// detached keeps the counters of a session that ended and flushes its
// pipeline. A target that exited is waited for; one still running after a
// read error is attached to again after a backoff.
func (d *Daemon) detached(s *session.Session, err error, stopping bool) {
	cs, cerr := s.Counters()
	d.mu.Lock()
	if cerr == nil {
		for fn, c := range cs {
			d.base[fn] = d.base[fn].Add(c)
		}
	}
	d.gov.Reset()
	a := d.cur
	d.cur = nil
	d.mu.Unlock()
	d.retirePipeline(a.pipe)
	d.stopped = time.Now()

	switch {
	case errors.Is(err, session.ErrTargetExited):
		d.log.Info("target exited, waiting for it to come back", "pid", a.proc.PID)
	case stopping && err != nil:
		d.log.Warn("reading the calls in flight", "err", err)
	case err != nil:
		d.log.Error("tracing stopped, attaching again", "pid", a.proc.PID, "err", err)
	}
}

func (d *Daemon) pipeline(cfg Config, a *attachment, exps map[string]export.Exporter) *export.Pipeline {
	res := export.Resource{PID: a.proc.PID, ContainerID: a.proc.ContainerID, GoVersion: a.s.File.GoVersion, HostName: export.NodeName()}
	if cfg.Target.everyProcess() {
		// Each process gets a resource of its own (process).
		res.PID, res.ContainerID = 0, ""
	}
	if v, _, err := presets.DetectVersion(a.s.File, cfg.Target.CiliumVersion); err == nil {
		res.CiliumVersion = v.Release
	}
	a.spans = export.NewSpanBuilder(res)
	return export.NewPipeline(a.spans, exps, export.PipelineConfig{
		QueueSize:    cfg.Pipeline.QueueSize,
		BatchSize:    cfg.Pipeline.BatchSize,
		BatchTimeout: cfg.Pipeline.BatchTimeout,
		OnError: func(exporter string, err error) {
			d.log.Warn("export failed", "exporter", exporter, "err", err)
		},
	})
}

// resolve finds the functions of the configured probes, each with its own
// filters. A function matched by several patterns takes the first one's.
// Patterns that match nothing are logged, not fatal: one configuration
// serves agents of several versions.
func (d *Daemon) resolve(f *symbols.File, cfg Config, offsets *offsets.File) ([]probe.Probe, map[string]float64, error) {
	var probes []probe.Probe
	maxEPS := map[string]float64{}
	limit := burstLimit(cfg.Governor.BudgetPercent/100, d.costPerCall(cfg))
	for i, pc := range cfg.Probes {
		filters := probe.Config{MinDuration: pc.MinDuration, SampleEvery: pc.Sample, BurstLimit: limit, Announce: pc.Breakdown}
		if pc.Preset != "" {
			ps, err := d.resolvePreset(f, pc.Preset, cfg.Target.CiliumVersion, offsets, filters)
			if err != nil {
				return nil, nil, &ConfigError{Key: fmt.Sprintf("probes[%d].preset", i), Msg: err.Error()}
			}
			for _, p := range ps {
				if _, dup := maxEPS[p.Func.Name]; !dup {
					maxEPS[p.Func.Name] = pc.MaxEventsPerSecond
					probes = append(probes, p)
				}
			}
			continue
		}
		ps, refused, err := session.Resolve(f, []string{pc.Func}, filters)
		for _, r := range refused {
			d.log.Warn("not probing", "func", r.Func, "reason", r.Reason)
		}
		if err != nil {
			d.log.Warn("probe matches no function that can be probed", "func", pc.Func, "err", err)
			continue
		}
		// A capture that names what the function lacks is an error,
		// not a warning: it would silently trace nothing.
		if err := session.ResolveCaptures(f, ps, slices.Concat(pc.Captures, pc.CaptureReturns), offsets); err != nil {
			return nil, nil, &ConfigError{Key: fmt.Sprintf("probes[%d].captures", i), Msg: err.Error()}
		}
		for _, p := range ps {
			if _, dup := maxEPS[p.Func.Name]; dup {
				continue
			}
			maxEPS[p.Func.Name] = pc.MaxEventsPerSecond
			probes = append(probes, p)
		}
	}
	return probes, maxEPS, nil
}

// resolvePreset finds the probes of a preset in f, each with the preset's
// captures, and logs the cilium release they are for and what they cannot
// trace.
func (d *Daemon) resolvePreset(f *symbols.File, name, release string, o *offsets.File, filters probe.Config) ([]probe.Probe, error) {
	sel, err := presets.Select(f, []string{name}, presets.Options{Release: release, Offsets: o})
	if err != nil {
		return nil, err
	}
	captures := 0
	for _, fn := range sel.Funcs {
		captures += len(fn.Captures)
	}
	d.log.Info("preset", "preset", name, "cilium", sel.Version.String(), "functions", len(sel.Funcs), "captures", captures)
	for _, w := range sel.Warnings {
		d.log.Warn("preset: " + w)
	}
	ps, refused, err := session.ResolvePresets(f, sel, filters)
	for _, r := range refused {
		d.log.Warn("not probing", "func", r.Func, "reason", r.Reason)
	}
	if err != nil && len(refused) > 0 {
		// Every function refused, each logged: as for a func probe,
		// not fatal.
		return nil, nil
	}
	return ps, err
}

// loadOffsets reads the configured offsets file, if any.
func loadOffsets(cfg Config) (*offsets.File, error) {
	if cfg.Offsets == "" {
		return nil, nil
	}
	o, err := offsets.Open(cfg.Offsets)
	if err != nil {
		return nil, &ConfigError{Key: "offsets", Msg: err.Error()}
	}
	return o, nil
}

func (d *Daemon) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// emit queues a call for export.
func (d *Daemon) emit(c *calls.Call) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cur.pipe.Enqueue(*c)
}

// retirePipeline flushes and shuts down a pipeline, keeping its counters
// for the metrics.
func (d *Daemon) retirePipeline(p *export.Pipeline) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		d.log.Warn("flushing exporters", "err", err)
	}
	st := p.Stats()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.retired.Received += st.Received
	d.retired.Dropped += st.Dropped
	if d.retired.Exporters == nil {
		d.retired.Exporters = map[string]export.ExporterStats{}
	}
	for name, e := range st.Exporters {
		r := d.retired.Exporters[name]
		r.Queued += e.Queued
		r.Exported += e.Exported
		r.Dropped += e.Dropped
		r.Failed += e.Failed
		d.retired.Exporters[name] = r
	}
}

// Reload applies a new configuration. Probes whose function and filters
// are unchanged are left alone, attached and traced throughout; removed
// ones are detached, new ones attached to the running set, changed ones
// reconfigured in place. Changed exporters get a new pipeline, started
// before the old one is flushed. Stacks, syscalls and expire_after take
// effect at the next attach, the target and the metrics address when the
// daemon restarts. An invalid configuration changes nothing.
func (d *Daemon) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	old := d.cfg
	a := d.cur
	d.mu.Unlock()

	var exps map[string]export.Exporter
	exportersChanged := !reflect.DeepEqual(old.Exporters, cfg.Exporters) || old.Pipeline != cfg.Pipeline
	if exportersChanged && a != nil {
		var err error
		if exps, err = export.NewExporters(context.Background(), cfg.Exporters, d.opts.Stdout); err != nil {
			return err
		}
	}
	// Run reads the target and the metrics address once; every attach
	// reads the session's settings (configure).
	for _, k := range []struct {
		key      string
		changed  bool
		atAttach bool
	}{
		{"target", old.Target.selector() != cfg.Target.selector() || old.Target.Binary != cfg.Target.Binary, false},
		{"stacks", old.Stacks != cfg.Stacks, true},
		{"syscalls", old.Syscalls != cfg.Syscalls || old.SyscallMin != cfg.SyscallMin, true},
		{"expire_after", old.ExpireAfter != cfg.ExpireAfter, true},
		{"metrics.listen", old.Metrics.Listen != cfg.Metrics.Listen, false},
	} {
		switch {
		case !k.changed:
		case k.atAttach:
			d.log.Warn("reload: change takes effect at the next attach, when the target or the daemon restarts", "key", k.key)
		default:
			d.log.Warn("reload: change takes effect only when the daemon restarts", "key", k.key)
		}
	}

	// Resolving reads the symbol table: not under d.mu, which the reader
	// needs for every record.
	var (
		probes []probe.Probe
		maxEPS map[string]float64
	)
	if a != nil {
		offsets, err := loadOffsets(cfg)
		if err == nil {
			probes, maxEPS, err = d.resolve(a.s.File, cfg, offsets)
		}
		if err != nil {
			for _, e := range exps {
				e.Shutdown(context.Background())
			}
			return err
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != a {
		// The target exited meanwhile: the next attach reads d.cfg.
		a = nil
		for _, e := range exps {
			e.Shutdown(context.Background())
		}
		exps = nil
	}
	d.cfg = cfg
	if d.gov != nil {
		d.gov.Policy = policy(cfg.Governor, cmp.Or(cfg.Governor.HitCost, d.cost), d.syscallCost)
	}
	if a == nil {
		if exportersChanged && d.exporters != nil {
			// Not attached yet: swap the exporters New built.
			for _, e := range d.exporters {
				e.Shutdown(context.Background())
			}
			d.exporters = nil
		}
		return nil
	}
	d.reloadProbes(a, probes, maxEPS)
	if exps != nil {
		oldPipe := a.pipe
		a.pipe = d.pipeline(cfg, a, exps)
		go d.retirePipeline(oldPipe)
		d.log.Info("reload: exporters replaced", "exporters", sortedKeys(exps))
	}
	d.poke()
	return nil
}

// reloadProbes changes the attached probes to these; d.mu held.
func (d *Daemon) reloadProbes(a *attachment, probes []probe.Probe, maxEPS map[string]float64) {
	want := map[string]probe.Probe{}
	for _, p := range probes {
		want[p.Func.Name] = p
	}
	// Every probe the session had, removed ones included: one added
	// again is attached again under its ID.
	ids := map[string]int{}
	for id, p := range a.s.Probes() {
		ids[p.Func.Name] = id
	}
	for _, name := range sortedKeys(ids) {
		if _, ok := want[name]; ok || !d.gov.Has(name) {
			continue
		}
		if err := a.s.Detach(ids[name]); err != nil {
			d.log.Warn("reload: cannot detach probe", "func", name, "err", err)
			continue
		}
		d.gov.Remove(name)
		d.log.Info("reload: probe removed", "func", name)
	}
	for _, p := range probes {
		name := p.Func.Name
		id, known := ids[name]
		switch {
		case !known:
			id, err := a.s.Add(p)
			if err != nil {
				d.log.Warn("reload: cannot attach probe", "func", name, "err", err)
				continue
			}
			d.gov.Add(name, id, p.Config, maxEPS[name])
			d.log.Info("reload: probe added", "func", name)
		case !d.gov.Has(name):
			if err := a.s.SetConfig(id, p.Config); err != nil {
				d.log.Warn("reload: cannot configure probe", "func", name, "err", err)
				continue
			}
			if err := a.s.Reattach(id); err != nil {
				d.log.Warn("reload: cannot attach probe", "func", name, "err", err)
				continue
			}
			d.gov.Add(name, id, p.Config, maxEPS[name])
			d.log.Info("reload: probe added", "func", name)
		default:
			// Compared with what was configured, not with the set,
			// whose sampling max_events_per_second may have raised.
			if c, eps := d.gov.Config(name); c == p.Config && eps == maxEPS[name] {
				continue
			}
			if err := a.s.SetConfig(id, p.Config); err != nil {
				d.log.Warn("reload: cannot configure probe", "func", name, "err", err)
				continue
			}
			d.gov.Update(name, p.Config, maxEPS[name])
			d.log.Info("reload: probe reconfigured", "func", name, "sample", p.SampleEvery,
				"min_duration", p.MinDuration, "max_events_per_second", maxEPS[name])
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// serveMetrics serves /metrics and /healthz on addr until the returned
// function is called.
func (d *Daemon) serveMetrics(addr string) (func(), error) {
	if addr == "none" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	d.mu.Lock()
	d.metrics = ln.Addr()
	d.mu.Unlock()
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
