package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/probe/syscalls"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
	"github.com/cilium-tracer/tracer/pkg/symbols/procmaps"
)

// Config is what one session traces and how.
type Config struct {
	// PID is the host PID of the target. 0 traces every process that
	// runs Binary, those started later included: the uprobes are on the
	// file, as bpftrace's path probes are.
	PID    int
	Binary string // path of the target's executable as the host sees it; default /proc/PID/exe
	Funcs  []string
	probe.Config
	Stacks bool
	// Captures are "NAME=EXPR" values to read at each entry and report as
	// call attributes (see ResolveCaptures).
	Captures []string
	// Offsets resolves Captures on stripped executables.
	Offsets *offsets.File
	// ExpireAfter is how long a call may go without returning before it
	// is reported unfinished and dropped from the goroutine table, so
	// goroutines that ended without a RET do not fill it; default 10m.
	ExpireAfter time.Duration
	// Detaching, if set, is called when the probes start to be removed,
	// with how many uprobes that is, and what it returns once they are
	// gone: thousands take seconds without uprobe_multi. Changes of the
	// probes fail with ErrFinished from its call on.
	Detaching func(uprobes int) (detached func())
	// Resolve, if set, chooses the probes in the executable instead of
	// Funcs, Config, Captures and Offsets: the daemon gives each pattern
	// filters of its own.
	Resolve func(*symbols.File) ([]probe.Probe, []Refused, error)
	// Tripped, if set, is called on Run's goroutine as soon as the
	// breaker of a probe trips (probe.Config.BurstLimit), with its ID.
	Tripped func(probe int)
	// Mode, if set, is how the probes run in place of the fastest the
	// kernel supports: tests run the fallbacks of older kernels with it.
	Mode *kernel.Mode
	// BreakdownEvery is how often the goroutine of a call in flight of a
	// probe with Announce is sampled, for the call's Breakdown; default
	// DefaultBreakdownEvery.
	BreakdownEvery time.Duration
	// Syscalls follows the system calls and child processes of the
	// traced calls (pkg/probe/syscalls): each call gets those at least
	// SyscallMin long (default syscalls.DefaultSpanMin) as
	// calls.Call.Syscalls, and counts of the shorter ones. Its programs
	// run at every system call on the node, and stop at once in the
	// processes not traced.
	Syscalls   bool
	SyscallMin time.Duration
	// Process, if set, hears of each process running the executable when
	// PID is 0: at its first call, before the call is emitted, and when
	// it exits, after its calls in flight are. On Run's goroutine.
	Process func(Process)
}

// ErrTargetExited ends Run when the traced process is gone.
var ErrTargetExited = errors.New("target exited")

// ErrFinished: the probes of a session that is detaching cannot change.
var ErrFinished = errors.New("session finished")

// A Refused function matched a pattern but cannot be probed safely.
type Refused struct {
	Func   string
	Reason error
}

// A Session is one attachment of probes to one process through its whole
// life: Start attaches them, Add, Detach, Pause, Reattach and SetConfig
// change them while Run reads their calls, sweeps the goroutine table and,
// at the end, detaches them and reports the calls still in flight. Follow
// runs one Session after another as the target restarts.
type Session struct {
	cfg    Config
	PID    int
	Binary string // the executable as opened from the host
	File   *symbols.File
	// Set holds the probes. Change them through the Session, which keeps
	// the changes apart from Run's reading and from the detach.
	Set     *probe.Set
	Refused []Refused
	// GoidErr says why goroutine IDs are unknown (nil: known): calls then
	// have Goroutine 0.
	GoidErr error

	// mu serializes the changes of the probes, and refuses them once the
	// detach has begun.
	mu       sync.Mutex
	finished bool
	// list guards the length of the set's list of probes, which Add grows
	// and reading a record consults, without keeping the probes' other
	// changes waiting for a record.
	list sync.RWMutex
	// buildMu guards the builder and its own copy of the probes, which
	// the changes update.
	buildMu sync.Mutex
	builder calls.Builder
	// procs follows the processes running the executable when PID is 0.
	procs *processes
	// sampler samples the goroutines of announced calls: from the start
	// when a probe announces, else from the first announcement (a probe
	// added later). Set on Run's goroutine after Start.
	sampler *sampler
	// syscalls follows the system calls of the traced calls
	// (Config.Syscalls); pending holds their events read before their
	// call's record, by call ID.
	syscalls *syscalls.Set
	pending  map[uint64][]syscalls.Event
	// outlived holds the children reported running at their call's end,
	// by PID, with their call's ID: their exits are dropped.
	outlived map[int]uint64
}

// Resolve finds the probes for the patterns: every matching function with
// the offsets of its RETs. Functions whose bodies do not decode cleanly or
// disagree with their pc tables are returned as refused, not probed: a probe
// off an instruction boundary corrupts the target. So are functions without
// a RET, with the functions they tail-call, if any.
func Resolve(f *symbols.File, patterns []string, c probe.Config) ([]probe.Probe, []Refused, error) {
	var (
		probes  []probe.Probe
		refused []Refused
		seen    = map[uint64]bool{}
	)
	for _, pat := range patterns {
		fns, err := f.Funcs(pat)
		if err != nil {
			return nil, nil, err
		}
		for _, fn := range fns {
			if seen[fn.Entry] {
				continue
			}
			seen[fn.Entry] = true
			p := probe.Probe{Func: fn, Config: c}
			var err error
			if c.EntryOnly {
				p.Entry, err = f.EntryOnce(fn)
			} else {
				p.Returns, err = f.ReturnOffsets(fn)
			}
			if err != nil {
				refused = append(refused, Refused{Func: fn.Name, Reason: err})
				continue
			}
			probes = append(probes, p)
		}
	}
	if len(probes) == 0 && len(refused) > 0 {
		return nil, refused, fmt.Errorf("%s: %w", refused[0].Func, refused[0].Reason)
	}
	return probes, refused, nil
}

// Start opens the target's executable, resolves the functions and attaches
// the probes.
func Start(cfg Config) (*Session, error) {
	return start(cfg, nil)
}

// start is Start with the executable already open when f is not nil: a
// restarted target running the same file needs no new symbol tables. It
// takes f over, closing it on error.
func start(cfg Config, f *symbols.File) (_ *Session, err error) {
	defer func() {
		if err != nil && f != nil {
			f.Close()
		}
	}()
	everyProcess := cfg.PID == 0 && cfg.Binary != ""
	if cfg.PID < 0 || cfg.PID == 0 && !everyProcess {
		return nil, fmt.Errorf("invalid PID %d", cfg.PID)
	}
	if !everyProcess {
		if err := alive(cfg.PID); err != nil {
			return nil, err
		}
	}
	bin := cfg.Binary
	if bin == "" {
		bin = fmt.Sprintf("/proc/%d/exe", cfg.PID)
	}
	if f == nil {
		if f, err = symbols.Open(bin); err != nil {
			return nil, err
		}
	}
	probes, refused, err := cfg.probes(f)
	if err != nil {
		return nil, err
	}
	var bias uint64
	if !everyProcess {
		if bias, err = procmaps.Bias(f, cfg.PID); err != nil {
			return nil, fmt.Errorf("load address of %s in PID %d: %w", bin, cfg.PID, err)
		}
	}
	// Without the goid offset the probes pair calls by g address, which
	// is no goroutine ID: the calls say their goroutine is unknown.
	goid, goidErr := offsets.GoidOffsetFrom(f, cfg.Offsets)

	errTypes, err := errorTypes(f, probes)
	if err != nil {
		return nil, err
	}
	set, err := probe.Attach(probes, probe.Options{
		Binary:     bin,
		PID:        cfg.PID,
		GoidOffset: goid,
		Stacks:     cfg.Stacks,
		Panics:     PanicOffsets(f),
		ErrorTypes: errTypes,
		Mode:       cfg.Mode,
	})
	if err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg, PID: cfg.PID, Binary: bin, File: f, Set: set, Refused: refused, GoidErr: goidErr}
	if cfg.Syscalls {
		if err := s.followSyscalls(); err != nil {
			set.Close()
			return nil, err
		}
	}
	for _, p := range probes {
		if p.Announce && s.sampler == nil {
			s.startSampler()
		}
	}
	s.builder = calls.Builder{File: f, Bias: bias, Probes: slices.Clone(set.Probes()), GoidUnknown: goidErr != nil}
	if everyProcess {
		s.procs = newProcesses(f, func() { set.Interrupt() })
		if f.PIE {
			s.builder.BiasOf = s.procs.bias
		}
	}
	if cfg.Stacks {
		s.builder.Stack = set.Stack
	}
	return s, nil
}

// probes returns the probes cfg chooses in f.
func (cfg Config) probes(f *symbols.File) ([]probe.Probe, []Refused, error) {
	if cfg.Resolve != nil {
		return cfg.Resolve(f)
	}
	probes, refused, err := Resolve(f, cfg.Funcs, cfg.Config)
	if err != nil {
		return nil, nil, err
	}
	if err := ResolveCaptures(f, probes, cfg.Captures, cfg.Offsets); err != nil {
		return nil, nil, err
	}
	return probes, refused, nil
}

// errorTypes returns the error types whose messages the probes read, if
// any probe reports errors.
func errorTypes(f *symbols.File, probes []probe.Probe) ([]args.ErrorType, error) {
	for _, p := range probes {
		if slices.ContainsFunc(p.Captures, isError) {
			ts, err := args.ErrorTypes(f)
			if err != nil {
				return nil, fmt.Errorf("error types: %w", err)
			}
			return ts, nil
		}
	}
	return nil, nil
}

// PanicOffsets returns the file offsets of runtime.gopanic and
// runtime.Goexit, which tell the probes a traced call may end without a RET.
func PanicOffsets(f *symbols.File) []uint64 {
	var offs []uint64
	for _, name := range []string{"runtime.gopanic", "runtime.Goexit"} {
		if fns, err := f.Funcs(name); err == nil {
			for _, fn := range fns {
				offs = append(offs, fn.Offset)
			}
		}
	}
	return offs
}

func alive(pid int) error {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return fmt.Errorf("no process with PID %d", pid)
	}
	return nil
}

// Run reads calls until ctx is done or the target exits, passing each to
// emit, on Run's goroutine. Every ExpireAfter/10 it sweeps the goroutine
// table: calls without a return for ExpireAfter are reported unfinished and
// leave it, so goroutines that ended without a RET do not fill it. Then it
// detaches the probes, every entry before any RET, and reports the calls
// still in flight as unfinished. Tracing every process that runs the
// executable, it runs until ctx is done, and reports the calls in flight
// in each process that exits as unfinished.
func (s *Session) Run(ctx context.Context, emit func(*calls.Call)) error {
	handle := func(r *probe.Record) {
		if c, ok := s.build(r); ok {
			emit(&c)
		}
	}
	expireAfter := cmp.Or(s.cfg.ExpireAfter, 10*time.Minute)
	lastSweep, lastScan := time.Now(), time.Now()
	exited, stop := s.watch(ctx)
	defer stop()
	watched := exited != nil
	wait := minWait
	for ctx.Err() == nil {
		if s.procs != nil && time.Since(lastScan) >= scanEvery {
			lastScan = time.Now()
			if err := s.scan(); err != nil {
				return s.finish(handle, err)
			}
		}
		if err := s.exits(emit); err != nil {
			return s.finish(handle, err)
		}
		if time.Since(lastSweep) > expireAfter/10 {
			lastSweep = time.Now()
			cs, err := s.expire(expireAfter)
			for i := range cs {
				emit(&cs[i])
			}
			if err != nil {
				return s.finish(handle, err)
			}
		}
		deadline := time.Now().Add(wait)
		if wait > maxWait {
			// Idle: the probes wake the reader for a lone record, the
			// watcher when the target exits or ctx is done.
			deadline = lastSweep.Add(expireAfter / 10)
			if s.procs != nil {
				deadline = lastScan.Add(scanEvery)
			}
		}
		c, ok, err := s.read(deadline)
		switch {
		case err == nil:
			wait = minWait
			if ok {
				emit(&c)
			}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, probe.ErrInterrupted):
			if wait <= maxWait {
				wait *= 2
			}
			if !watched {
				wait = min(wait, maxWait)
			}
			if s.procs != nil {
				continue
			}
			// The pidfd fires at the exit, before the process is reaped:
			// /proc/PID stays meanwhile.
			gone := alive(s.PID) != nil
			select {
			case <-exited:
				gone = true
			default:
			}
			if gone {
				return s.finish(handle, fmt.Errorf("PID %d: %w", s.PID, ErrTargetExited))
			}
		default:
			return s.finish(handle, err)
		}
	}
	return s.finish(handle, nil)
}

// scanEvery is how often a session tracing every process that runs the
// executable looks in the goroutine table for processes it has no record
// of: one killed in its first traced call, whose exit only the table
// shows. A look is one syscall per goroutine with calls in flight.
const scanEvery = time.Second

// scan follows the processes with calls in flight that no record named.
func (s *Session) scan() error {
	s.list.RLock()
	pids, err := s.Set.Processes()
	s.list.RUnlock()
	for _, pid := range pids {
		if p := s.procs.see(pid); p != nil {
			s.seen(p)
		}
	}
	return err
}

// exits reports the calls in flight in each traced process that exited,
// then the process, when tracing every process that runs the executable.
func (s *Session) exits(emit func(*calls.Call)) error {
	if s.procs == nil {
		return nil
	}
	for _, pid := range s.procs.exits() {
		s.list.RLock()
		recs, err := s.Set.Exited(pid)
		s.list.RUnlock()
		for i := range recs {
			if c, ok := s.build(&recs[i]); ok {
				emit(&c)
			}
		}
		if err != nil {
			return err
		}
		if s.syscalls != nil {
			s.syscalls.Unwatch(pid)
		}
		if p, ok := s.procs.exit(pid); ok && s.cfg.Process != nil {
			s.cfg.Process(p)
		}
	}
	return nil
}

// The probes wake the reader for a batch of records, a breaker's trip, and
// a lone record when no record did in the last 100 ms (wakeup_flags in
// uprobes.c). After a record the reader polls on a deadline that doubles
// from minWait to maxWait, longer in all than those 100 ms, so it finds the
// lone records that did not wake it. Then, idle, it blocks until a wakeup,
// the target's exit or the next sweep: an idle daemon does not wake at all.
const (
	minWait = 100 * time.Millisecond
	maxWait = time.Second
)

// watch interrupts the reader when the target exits or ctx is done. The
// channel it returns is closed at the exit; it is nil without a pidfd
// (Linux < 5.3, or a seccomp policy), and the reader keeps polling then,
// once every maxWait when idle.
func (s *Session) watch(ctx context.Context) (exited <-chan struct{}, stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			s.Set.Interrupt()
		case <-done:
		}
	}()
	if s.procs != nil {
		// No target to exit: each process wakes the reader at its exit.
		return make(chan struct{}), func() { close(done) }
	}
	gone := make(chan struct{})
	stopWait, err := onExit(s.PID, func() {
		close(gone)
		s.Set.Interrupt()
	})
	if err != nil {
		return nil, func() { close(done) }
	}
	return gone, func() {
		close(done)
		stopWait()
	}
}

// read waits until deadline for the next record and builds its call. It
// holds the probe list while it waits, not while the call is emitted: emit
// may wait for whoever changes the probes.
func (s *Session) read(deadline time.Time) (calls.Call, bool, error) {
	var rec probe.Record
	s.list.RLock()
	s.Set.SetDeadline(deadline)
	err := s.Set.Read(&rec)
	s.list.RUnlock()
	if err != nil {
		return calls.Call{}, false, err
	}
	c, ok := s.build(&rec)
	return c, ok, nil
}

// expire sweeps the goroutine table and returns the calls it removed.
func (s *Session) expire(maxAge time.Duration) ([]calls.Call, error) {
	s.list.RLock()
	recs, err := s.Set.Expire(maxAge)
	s.list.RUnlock()
	cs := make([]calls.Call, 0, len(recs))
	for i := range recs {
		if c, ok := s.build(&recs[i]); ok {
			cs = append(cs, c)
		}
	}
	return cs, err
}

// build converts a record. A breaker's record is no call: it goes to
// Config.Tripped.
func (s *Session) build(r *probe.Record) (calls.Call, bool) {
	if r.Kind == probe.Tripped {
		if s.cfg.Tripped != nil {
			s.cfg.Tripped(r.Probe)
		}
		return calls.Call{}, false
	}
	if s.procs != nil {
		if p := s.procs.see(r.PID); p != nil {
			s.seen(p)
		}
	}
	if r.Kind == probe.Entered {
		if s.sampler == nil {
			s.startSampler()
		}
		s.sampler.enter(r, s.GoidErr == nil)
		return calls.Call{}, false
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	if s.builder.BiasOf != nil && r.StackID >= 0 && r.Probe >= 0 && r.Probe < len(s.builder.Probes) {
		s.procs.learnBias(r.PID, s.builder.Probes[r.Probe].EntryOffset(), func() ([]uint64, error) { return s.Set.Stack(r.StackID) })
	}
	// A record whose stack could not be read is still a call.
	c, err := s.builder.Build(r)
	if s.sampler != nil {
		c.Breakdown = s.sampler.leave(r.ID, r.End).Breakdown()
	}
	if s.syscalls != nil {
		s.addSyscalls(&c, r.End)
	}
	return c, err == nil || c.Func != ""
}

// seen tells of process p, seen for the first time.
func (s *Session) seen(p *Process) {
	if s.syscalls != nil {
		// A process whose syscalls cannot be followed is still traced:
		// its calls come without them.
		_ = s.syscalls.Watch(p.PID)
	}
	if s.cfg.Process != nil {
		s.cfg.Process(*p)
	}
}

// followSyscalls attaches the syscall programs, following the target, or
// each process as it is seen.
func (s *Session) followSyscalls() error {
	sc, err := syscalls.Attach(syscalls.Options{Goroutines: s.Set.Goroutines(), SpanMin: s.cfg.SyscallMin})
	if err != nil {
		return err
	}
	if s.PID != 0 {
		if err := sc.Watch(s.PID); err != nil {
			sc.Close()
			return err
		}
	}
	s.syscalls, s.pending, s.outlived = sc, map[uint64][]syscalls.Event{}, map[int]uint64{}
	return nil
}

// maxPending bounds the calls whose syscalls wait for their record (those
// of calls shorter than their probe's MinDuration never get one), and the
// children reported running whose exit is still to come.
const maxPending = 4096

// addSyscalls gives c, which ended at end (CLOCK_MONOTONIC), its system
// calls and child processes. They are in the ring buffer before c's record
// is read: each ended before c returned, and each child started. A child
// whose exit has not come by c's end is still running: it ends at c's end,
// and its exit, when it comes, is dropped. A call whose syscalls cannot be
// read is still a call.
func (s *Session) addSyscalls(c *calls.Call, end uint64) {
	s.readSyscalls()
	evs := s.takeSyscalls(c.ID)
	exited := map[int]bool{}
	for _, e := range evs {
		if e.Child {
			exited[int(e.Ret)] = true
		}
	}
	var out []syscalls.Event
	reread := false
	for _, e := range evs {
		switch {
		case !e.ChildStart:
			out = append(out, e)
		case exited[int(e.Ret)]:
			// Its exit is its span.
		default:
			r, ok, _ := s.syscalls.Running(c.ID, int(e.Ret))
			if !ok {
				// It exited after the read: its exit is waiting.
				reread = true
				continue
			}
			out = append(out, r)
			if len(s.outlived) >= maxPending {
				clear(s.outlived)
			}
			s.outlived[int(e.Ret)] = c.ID
		}
	}
	if reread {
		s.readSyscalls()
		for _, e := range s.takeSyscalls(c.ID) {
			if !e.ChildStart {
				out = append(out, e)
			}
		}
	}
	for i := range out {
		if out[i].Child && (out[i].Running || out[i].End > end) {
			out[i].Running, out[i].End = true, end
		}
	}
	totals, _ := s.syscalls.Totals(c.ID)
	c.Syscalls, c.SyscallTotals = s.builder.Syscalls(out, totals)
}

// readSyscalls reads the waiting syscall events into s.pending, but the
// exits of children already reported running.
func (s *Session) readSyscalls() {
	_ = s.syscalls.Read(func(e syscalls.Event) {
		if id, ok := s.outlived[int(e.Ret)]; ok && e.Child && id == e.Call {
			delete(s.outlived, int(e.Ret))
			return
		}
		if len(s.pending) >= maxPending {
			clear(s.pending)
		}
		s.pending[e.Call] = append(s.pending[e.Call], e)
	})
}

// takeSyscalls returns the events of call id read so far, and forgets them.
func (s *Session) takeSyscalls(id uint64) []syscalls.Event {
	evs := s.pending[id]
	delete(s.pending, id)
	return evs
}

// startSampler starts sampling the goroutines of announced calls; for one
// target, it reads the target's tables now, not at the first call.
func (s *Session) startSampler() {
	s.sampler = newSampler(s.File, s.cfg.Offsets, cmp.Or(s.cfg.BreakdownEvery, DefaultBreakdownEvery))
	if s.PID != 0 {
		s.sampler.reader(s.PID)
	}
}

// BreakdownCost returns, once Run has returned, how many goroutine states
// the breakdown's sampling read and the CPU time of the thread that read
// them: the tracer's own cost of --breakdown. Zero without a probe that
// announces its calls.
func (s *Session) BreakdownCost() (samples uint64, cpu time.Duration) {
	if s.sampler == nil {
		return 0, 0
	}
	return s.sampler.samples.Load(), s.sampler.cpu
}

// changed gives the builder the probes as they are now; s.mu held.
func (s *Session) changed() {
	ps := slices.Clone(s.Set.Probes())
	s.buildMu.Lock()
	s.builder.Probes = ps
	s.buildMu.Unlock()
}

// finish detaches the probes and reports every call they saw: those that
// return while the uprobes are being removed, then those still in flight.
// Set.Stop removes every entry probe before any RET probe, so no call
// starts that could not be seen returning.
func (s *Session) finish(handle func(*probe.Record), cause error) error {
	if s.cfg.Detaching != nil {
		s.mu.Lock()
		n := s.Set.Uprobes()
		s.mu.Unlock()
		// Called before changes are refused: whoever makes them can
		// stop first.
		defer s.cfg.Detaching(n)()
	}
	s.mu.Lock()
	s.finished = true
	s.mu.Unlock()
	err := s.Set.Stop(handle)
	if s.procs != nil {
		s.procs.close()
	}
	if s.sampler != nil {
		s.sampler.close()
	}
	return errors.Join(cause, err)
}

// change runs f unless the detach has begun, one change at a time.
func (s *Session) change(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrFinished
	}
	defer s.changed()
	return f()
}

// Add attaches one more probe and returns its ID; Run reads its calls from
// then on. IDs are never reused.
func (s *Session) Add(p probe.Probe) (int, error) {
	var id int
	err := s.change(func() error {
		s.list.Lock()
		defer s.list.Unlock()
		var err error
		id, err = s.Set.Add(p)
		return err
	})
	return id, err
}

// Pause removes the entry probe of id and keeps its RET probes, so the
// calls in flight still return and are reported.
func (s *Session) Pause(id int) error {
	return s.change(func() error { return s.Set.Pause(id) })
}

// Detach removes every uprobe of probe id, the entry first.
func (s *Session) Detach(id int) error {
	return s.change(func() error { return s.Set.Detach(id) })
}

// Reattach attaches probe id again after Detach or Pause.
func (s *Session) Reattach(id int) error {
	return s.change(func() error { return s.Set.Reattach(id) })
}

// SetConfig changes the filters of probe id.
func (s *Session) SetConfig(id int, c probe.Config) error {
	return s.change(func() error { return s.Set.SetConfig(id, c) })
}

// Probes returns the probes, indexed by probe ID, those detached included.
func (s *Session) Probes() []probe.Probe {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	return slices.Clone(s.builder.Probes)
}

// ProbeCounters returns the BPF counters, indexed by probe ID.
func (s *Session) ProbeCounters() ([]probe.Counters, error) {
	s.list.RLock()
	defer s.list.RUnlock()
	return s.Set.Counters()
}

// Counters returns the BPF counters per function name.
func (s *Session) Counters() (map[string]probe.Counters, error) {
	cs, err := s.ProbeCounters()
	if err != nil {
		return nil, err
	}
	probes := s.Probes()
	out := make(map[string]probe.Counters, len(cs))
	for id, c := range cs {
		out[probes[id].Func.Name] = c
	}
	return out, nil
}

// Close detaches the probes and closes the executable.
func (s *Session) Close() error {
	if s.sampler != nil {
		s.sampler.close()
	}
	return errors.Join(s.closeSyscalls(), s.Set.Close(), s.File.Close())
}

func (s *Session) closeSyscalls() error {
	if s.syscalls == nil {
		return nil
	}
	return s.syscalls.Close()
}

// release detaches the probes and hands the executable on to the caller.
func (s *Session) release() (*symbols.File, error) {
	return s.File, errors.Join(s.closeSyscalls(), s.Set.Close())
}

// SyscallsDropped returns how many system calls and child processes of
// traced calls were lost to a full ring buffer; 0 without Config.Syscalls.
func (s *Session) SyscallsDropped() (uint64, error) {
	if s.syscalls == nil {
		return 0, nil
	}
	return s.syscalls.Dropped()
}

// SyscallRuns returns how many times the syscall programs ran at system
// calls' entry and exit, on the whole node, since the session attached
// them (syscalls.Set.Runs); 0 without Config.Syscalls.
func (s *Session) SyscallRuns() (uint64, error) {
	if s.syscalls == nil {
		return 0, nil
	}
	return s.syscalls.Runs()
}

// A StackCount is how often an entry-only probe's function was called from
// one stack.
type StackCount struct {
	Func  string
	Count uint64
	Stack []calls.Frame // nil without stacks
}

// EntryCounts returns the counts of the entry-only probes, most frequent
// first.
func (s *Session) EntryCounts() ([]StackCount, error) {
	ecs, err := s.Set.EntryCounts()
	if err != nil {
		return nil, err
	}
	probes := s.Set.Probes()
	out := make([]StackCount, 0, len(ecs))
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	for _, ec := range ecs {
		if ec.Probe < 0 || ec.Probe >= len(probes) {
			continue
		}
		sc := StackCount{Func: probes[ec.Probe].Func.Name, Count: ec.Count}
		switch {
		case ec.StackID < 0 || s.builder.Stack == nil:
		case s.builder.BiasOf != nil:
			// The counts are not per process, and each loads a PIE
			// elsewhere: the stack says where.
			if pcs, err := s.Set.Stack(ec.StackID); err == nil {
				if bias, ok := biasFrom(s.File, probes[ec.Probe].EntryOffset(), pcs); ok {
					sc.Stack = s.builder.SymbolizeWith(pcs, bias)
				}
			}
		default:
			// A stack that cannot be read still counts.
			sc.Stack, _ = s.builder.StackFrames(s.PID, ec.StackID)
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b StackCount) int { return cmp.Compare(b.Count, a.Count) })
	return out, nil
}
