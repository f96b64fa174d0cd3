package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
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

// A Daemon traces one target continuously: it attaches the configured
// probes, follows the target across restarts, keeps the probes' cost under
// budget with a Governor and exports spans until Run's context ends.
type Daemon struct {
	opts Options
	log  *slog.Logger

	// mu guards everything below, the current attachment's builder,
	// pipeline and ids, and the probe configurations in its set.
	mu         sync.Mutex
	cfg        Config
	exporters  map[string]export.Exporter // built by New for the first attachment
	gov        *Governor
	cost       time.Duration
	cur        *attachment
	base       map[string]probe.Counters // counters of sets closed since start
	retired    export.Stats              // stats of pipelines shut down since start
	reattaches uint64
	wake       chan struct{}
	metrics    net.Addr

	// kept is the executable of the last target, open after it exited:
	// a restart running the same file needs no new symbol tables. Only
	// Run's goroutine uses it.
	kept    *kept
	running chan struct{} // closed once the metrics server listens
}

type kept struct {
	proc container.Process
	file *symbols.File
}

// symbolsFor returns the executable of proc: the last target's when it ran
// the same file, else bin opened anew.
func (d *Daemon) symbolsFor(proc container.Process, bin string, override bool) (*symbols.File, error) {
	k := d.kept
	d.kept = nil
	if k != nil {
		if !override && proc.SameBinary(k.proc) {
			return k.file, nil
		}
		k.file.Close()
	}
	return symbols.Open(bin)
}

// attachment is the daemon's hold on one target process.
type attachment struct {
	proc    container.Process
	file    *symbols.File
	builder calls.Builder
	ids     map[string]int // function -> probe ID, removed ones included
	pipe    *export.Pipeline

	// setMu lets the reader Read without d.mu while Add changes the
	// set's probe list, which Read consults.
	setMu sync.RWMutex
	set   *probe.Set
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
// ambiguous, or the first attach fails.
func (d *Daemon) Run(ctx context.Context) error {
	defer func() {
		if d.kept != nil {
			d.kept.file.Close()
			d.kept = nil
		}
		// Exporters built by New and never handed to a pipeline.
		d.mu.Lock()
		exps := d.exporters
		d.exporters = nil
		d.mu.Unlock()
		for _, e := range exps {
			e.Shutdown(context.Background())
		}
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
	d.cost = cost
	d.gov = NewGovernor(policy(cfg.Governor, cost), d.log)
	d.mu.Unlock()

	if wait := Jitter(cfg.Jitter.Start, d.opts.Rand); wait > 0 {
		d.log.Info("start jitter: waiting before attaching", "wait", wait.Round(time.Millisecond), "window", cfg.Jitter.Start)
		if !sleep(ctx, wait) {
			return nil
		}
	}

	sel := cfg.Target.selector()
	proc, err := d.find(ctx, sel, cfg.Target.backoff())
	if err != nil || ctx.Err() != nil {
		return err
	}
	a, err := d.attach(proc)
	if err != nil {
		return err
	}
	d.log.Info("tracing", "pid", proc.PID, "target", proc.String(), "probes", len(a.set.Probes()))
	for {
		err := d.trace(ctx, a)
		d.finish(a)
		if ctx.Err() != nil {
			return nil
		}
		// A target that exited is waited for; one still running after a
		// read error is attached to again after a backoff.
		exited := errors.Is(err, session.ErrTargetExited)
		if exited {
			d.log.Info("target exited, waiting for it to come back", "pid", proc.PID)
		} else {
			d.log.Error("tracing stopped, attaching again", "pid", proc.PID, "err", err)
		}
		cfg = d.config()
		stopped := time.Now()
		for {
			next := proc
			if exited {
				next, err = container.Watch(ctx, sel, proc, container.WatchOptions{
					Backoff: cfg.Target.backoff(),
					OnRetry: func(attempt int, err error, wait time.Duration) {
						d.log.Debug("target not back yet", "attempt", attempt, "err", err, "retry_in", wait)
					},
				})
				if err != nil {
					return nil // ctx is done
				}
			} else if !sleep(ctx, cfg.Target.backoff().Next(0)) {
				return nil
			}
			if wait := Jitter(cfg.Jitter.Reattach, d.opts.Rand); wait > 0 && !sleep(ctx, wait) {
				return nil
			}
			a, err = d.attach(next)
			if err != nil {
				// Stability first: never retry in a loop against a
				// running agent; try again when it restarts.
				d.log.Error("cannot attach, waiting for the target's next restart", "pid", next.PID, "err", err)
				proc, exited = next, true
				continue
			}
			if exited {
				d.mu.Lock()
				d.reattaches++
				d.mu.Unlock()
				d.log.Info("target restarted: re-attached",
					"old_pid", proc.PID, "pid", next.PID, "binary_changed", !next.SameBinary(proc),
					"probes", len(a.set.Probes()), "after", time.Since(stopped).Round(time.Millisecond))
			} else {
				d.log.Info("re-attached", "pid", next.PID, "probes", len(a.set.Probes()))
			}
			proc = next
			break
		}
	}
}

func (d *Daemon) config() Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func policy(g GovernorConfig, cost time.Duration) Policy {
	return Policy{
		Budget:    g.BudgetPercent / 100,
		Cost:      cost,
		Interval:  g.Interval,
		Window:    g.Window,
		MaxPeriod: g.MaxPeriod,
	}
}

// find resolves the target, waiting with backoff while it is not there. An
// ambiguous selector is the operator's to fix: it is returned.
func (d *Daemon) find(ctx context.Context, sel container.Selector, b container.Backoff) (container.Process, error) {
	for attempt := 0; ; attempt++ {
		p, err := container.Resolve(ctx, sel)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, container.ErrAmbiguous) || ctx.Err() != nil {
			return container.Process{}, err
		}
		wait := b.Next(attempt)
		if attempt == 0 {
			d.log.Info("waiting for the target", "err", err)
		} else {
			d.log.Debug("target not found yet", "attempt", attempt, "err", err, "retry_in", wait)
		}
		if !sleep(ctx, wait) {
			return container.Process{}, nil
		}
	}
}

// attach opens the target's executable, attaches the probes and starts a
// pipeline for its spans.
func (d *Daemon) attach(proc container.Process) (_ *attachment, err error) {
	cfg := d.config()
	bin := cmp.Or(cfg.Target.Binary, proc.Binary)
	f, err := d.symbolsFor(proc, bin, cfg.Target.Binary != "")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	offsets, err := loadOffsets(cfg)
	if err != nil {
		return nil, err
	}
	probes, maxEPS, err := d.resolve(f, cfg, offsets)
	if err != nil {
		return nil, err
	}
	if len(probes) == 0 {
		return nil, fmt.Errorf("%s: %w", bin, ErrNoProbes)
	}
	bias, err := f.Bias(proc.PID)
	if err != nil {
		return nil, fmt.Errorf("load address of %s in PID %d: %w", bin, proc.PID, err)
	}
	// Without the goid offset the probes pair calls by g address, which
	// is no goroutine ID: the spans leave goroutine.id out.
	goid, goidErr := f.GoidOffsetFrom(offsets)
	if goidErr != nil {
		d.log.Warn("goroutine IDs unknown", "err", goidErr)
	}
	set, err := probe.Attach(probes, probe.Options{
		Binary:     bin,
		PID:        proc.PID,
		GoidOffset: goid,
		Stacks:     cfg.Stacks,
		Panics:     session.PanicOffsets(f),
	})
	if err != nil {
		return nil, err
	}

	d.mu.Lock()
	exps := d.exporters
	d.exporters = nil
	d.mu.Unlock()
	if exps == nil {
		if exps, err = export.NewExporters(context.Background(), cfg.Exporters, d.opts.Stdout); err != nil {
			set.Close()
			return nil, err
		}
	}
	a := &attachment{proc: proc, file: f, set: set, ids: map[string]int{}}
	a.builder = calls.Builder{File: f, Bias: bias, Probes: set.Probes(), GoidUnknown: goidErr != nil}
	if cfg.Stacks {
		a.builder.Stack = set.Stack
	}
	a.pipe = d.pipeline(cfg, a, exps)

	d.mu.Lock()
	defer d.mu.Unlock()
	for id, p := range set.Probes() {
		a.ids[p.Func.Name] = id
		d.gov.Add(p.Func.Name, id, p.Config, maxEPS[p.Func.Name])
	}
	d.gov.Keep(a.ids)
	d.cur = a
	d.poke()
	return a, nil
}

func (d *Daemon) pipeline(cfg Config, a *attachment, exps map[string]export.Exporter) *export.Pipeline {
	res := export.Resource{PID: a.proc.PID, ContainerID: a.proc.ContainerID, GoVersion: a.file.GoVersion}
	res.HostName = export.NodeName()
	return export.NewPipeline(export.NewSpanBuilder(res), exps, export.PipelineConfig{
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
func (d *Daemon) resolve(f *symbols.File, cfg Config, offsets *symbols.Offsets) ([]probe.Probe, map[string]float64, error) {
	var probes []probe.Probe
	maxEPS := map[string]float64{}
	for i, pc := range cfg.Probes {
		ps, refused, err := session.Resolve(f, []string{pc.Func}, probe.Config{MinDuration: pc.MinDuration, SampleEvery: pc.Sample})
		for _, r := range refused {
			d.log.Warn("not probing", "func", r.Func, "reason", r.Reason)
		}
		if err != nil {
			d.log.Warn("probe matches no function that can be probed", "func", pc.Func, "err", err)
			continue
		}
		if len(pc.Captures) > 0 || offsets != nil {
			// A capture that names what the function lacks is an
			// error, not a warning: it would silently trace nothing.
			if err := session.ResolveCaptures(f, ps, pc.Captures, offsets); err != nil {
				return nil, nil, &ConfigError{Key: fmt.Sprintf("probes[%d].captures", i), Msg: err.Error()}
			}
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

// loadOffsets reads the configured offsets file, if any.
func loadOffsets(cfg Config) (*symbols.Offsets, error) {
	if cfg.Offsets == "" {
		return nil, nil
	}
	o, err := symbols.OpenOffsets(cfg.Offsets)
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

// trace reads calls and runs the governor until ctx is done or the target
// exits.
func (d *Daemon) trace(ctx context.Context, a *attachment) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if container.WaitExit(tctx, a.proc) == nil {
			cancel(fmt.Errorf("PID %d: %w", a.proc.PID, session.ErrTargetExited))
		}
	}()
	readErr := make(chan error, 1)
	go func() { readErr <- d.read(tctx, a) }()

	for {
		d.mu.Lock()
		next := d.gov.Next()
		d.mu.Unlock()
		t := time.NewTimer(time.Until(next))
		select {
		case <-tctx.Done():
			t.Stop()
			<-readErr
			return context.Cause(tctx)
		case err := <-readErr:
			t.Stop()
			return err
		case <-d.wake:
			t.Stop()
		case <-t.C:
			d.mu.Lock()
			err := d.gov.Tick(time.Now(), a.set)
			d.mu.Unlock()
			if err != nil {
				d.log.Warn("governor", "err", err)
			}
		}
	}
}

func (d *Daemon) read(ctx context.Context, a *attachment) error {
	var rec probe.Record
	for ctx.Err() == nil {
		a.setMu.RLock()
		a.set.SetDeadline(time.Now().Add(100 * time.Millisecond))
		err := a.set.Read(&rec)
		a.setMu.RUnlock()
		switch {
		case err == nil:
			d.mu.Lock()
			d.emit(a, &rec)
			d.mu.Unlock()
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			return err
		}
	}
	return nil
}

// emit builds the call of one record and queues it for export; d.mu held.
func (d *Daemon) emit(a *attachment, r *probe.Record) {
	// A record whose stack could not be read is still a call.
	c, err := a.builder.Build(r)
	if err != nil && c.Func == "" {
		return
	}
	a.pipe.Enqueue(c)
}

// finish detaches every probe, reports the calls still in flight as
// unfinished, flushes the pipeline and closes the set.
func (d *Daemon) finish(a *attachment) {
	d.mu.Lock()
	start, n := time.Now(), a.set.Uprobes()
	if err := a.set.Stop(func(r *probe.Record) { d.emit(a, r) }); err != nil {
		d.log.Warn("reading the calls in flight", "err", err)
	}
	d.log.Info("probes detached", "uprobes", n, "took", time.Since(start).Round(time.Millisecond))
	if cs, err := a.set.Counters(); err == nil {
		for id, c := range cs {
			d.base[a.set.Probes()[id].Func.Name] = d.base[a.set.Probes()[id].Func.Name].Add(c)
		}
	}
	d.gov.Reset()
	d.cur = nil
	d.mu.Unlock()

	d.retirePipeline(a.pipe)
	if err := a.set.Close(); err != nil {
		d.log.Warn("detaching", "err", err)
	}
	d.kept = &kept{proc: a.proc, file: a.file}
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
// before the old one is flushed. The target, stacks and the metrics address
// take effect only on restart. An invalid configuration changes nothing.
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
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"target", old.Target.selector() != cfg.Target.selector() || old.Target.Binary != cfg.Target.Binary},
		{"stacks", old.Stacks != cfg.Stacks},
		{"metrics.listen", old.Metrics.Listen != cfg.Metrics.Listen},
	} {
		if k.changed {
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
			probes, maxEPS, err = d.resolve(a.file, cfg, offsets)
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
		d.gov.Policy = policy(cfg.Governor, cmp.Or(cfg.Governor.HitCost, d.cost))
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
	for _, name := range sortedKeys(a.ids) {
		if _, ok := want[name]; ok || !d.gov.Has(name) {
			continue
		}
		if err := a.set.Detach(a.ids[name]); err != nil {
			d.log.Warn("reload: cannot detach probe", "func", name, "err", err)
			continue
		}
		d.gov.Remove(name)
		d.log.Info("reload: probe removed", "func", name)
	}
	for _, p := range probes {
		name := p.Func.Name
		id, known := a.ids[name]
		switch {
		case !known:
			a.setMu.Lock()
			id, err := a.set.Add(p)
			a.setMu.Unlock()
			if err != nil {
				d.log.Warn("reload: cannot attach probe", "func", name, "err", err)
				continue
			}
			a.ids[name] = id
			d.gov.Add(name, id, p.Config, maxEPS[name])
			d.log.Info("reload: probe added", "func", name)
		case !d.gov.Has(name):
			if err := a.set.SetConfig(id, p.Config); err != nil {
				d.log.Warn("reload: cannot configure probe", "func", name, "err", err)
				continue
			}
			if err := a.set.Reattach(id); err != nil {
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
			if err := a.set.SetConfig(id, p.Config); err != nil {
				d.log.Warn("reload: cannot configure probe", "func", name, "err", err)
				continue
			}
			d.gov.Update(name, p.Config, maxEPS[name])
			d.log.Info("reload: probe reconfigured", "func", name, "sample", p.SampleEvery,
				"min_duration", p.MinDuration, "max_events_per_second", maxEPS[name])
		}
	}
	a.builder.Probes = a.set.Probes()
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
