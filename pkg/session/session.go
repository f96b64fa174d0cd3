package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// Config is what one session traces and how.
type Config struct {
	PID    int    // host PID of the target
	Binary string // path of the target's executable as the host sees it; default /proc/PID/exe
	Funcs  []string
	probe.Config
	Stacks bool
	// Captures are "NAME=EXPR" values to read at each entry and report as
	// call attributes (see ResolveCaptures).
	Captures []string
	// Offsets resolves Captures on stripped executables.
	Offsets *symbols.Offsets
	// ExpireAfter is how long a call may go without returning before it
	// is reported unfinished and dropped from the goroutine table, so
	// goroutines that ended without a RET do not fill it; default 10m.
	ExpireAfter time.Duration
	// Detaching, if set, is called when the probes start to be removed,
	// with how many uprobes that is, and what it returns once they are
	// gone: thousands take seconds without uprobe_multi.
	Detaching func(uprobes int) (detached func())
}

// ErrTargetExited ends Run when the traced process is gone.
var ErrTargetExited = errors.New("target exited")

// A Refused function matched a pattern but cannot be probed safely.
type Refused struct {
	Func   string
	Reason error
}

// A Session is a set of probes attached to one process.
type Session struct {
	cfg     Config
	PID     int
	Binary  string // the executable as opened from the host
	File    *symbols.File
	Set     *probe.Set
	Refused []Refused
	// GoidErr says why goroutine IDs are unknown (nil: known): calls then
	// have Goroutine 0.
	GoidErr error
	builder calls.Builder
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
			if !c.EntryOnly {
				rets, err := f.ReturnOffsets(fn)
				if err != nil {
					refused = append(refused, Refused{Func: fn.Name, Reason: err})
					continue
				}
				p.Returns = rets
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
func Start(cfg Config) (_ *Session, err error) {
	if cfg.PID <= 0 {
		return nil, fmt.Errorf("invalid PID %d", cfg.PID)
	}
	if err := alive(cfg.PID); err != nil {
		return nil, err
	}
	bin := cfg.Binary
	if bin == "" {
		bin = fmt.Sprintf("/proc/%d/exe", cfg.PID)
	}
	f, err := symbols.Open(bin)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	probes, refused, err := Resolve(f, cfg.Funcs, cfg.Config)
	if err != nil {
		return nil, err
	}
	if err := ResolveCaptures(f, probes, cfg.Captures, cfg.Offsets); err != nil {
		return nil, err
	}
	bias, err := f.Bias(cfg.PID)
	if err != nil {
		return nil, fmt.Errorf("load address of %s in PID %d: %w", bin, cfg.PID, err)
	}
	// Without the goid offset the probes pair calls by g address, which
	// is no goroutine ID: the calls say their goroutine is unknown.
	goid, goidErr := f.GoidOffsetFrom(cfg.Offsets)

	set, err := probe.Attach(probes, probe.Options{
		Binary:     bin,
		PID:        cfg.PID,
		GoidOffset: goid,
		Stacks:     cfg.Stacks,
		Panics:     PanicOffsets(f),
	})
	if err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg, PID: cfg.PID, Binary: bin, File: f, Set: set, Refused: refused, GoidErr: goidErr}
	s.builder = calls.Builder{File: f, Bias: bias, Probes: set.Probes(), GoidUnknown: goidErr != nil}
	if cfg.Stacks {
		s.builder.Stack = set.Stack
	}
	return s, nil
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
// emit. It then detaches the probes and reports the calls still in flight as
// unfinished.
func (s *Session) Run(ctx context.Context, emit func(*calls.Call)) error {
	var rec probe.Record
	handle := func(r *probe.Record) {
		// A record whose stack could not be read is still a call.
		call, err := s.builder.Build(r)
		if err == nil || call.Func != "" {
			emit(&call)
		}
	}
	expireAfter := cmp.Or(s.cfg.ExpireAfter, 10*time.Minute)
	lastSweep := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastSweep) > expireAfter/10 {
			lastSweep = time.Now()
			recs, err := s.Set.Expire(expireAfter)
			for i := range recs {
				handle(&recs[i])
			}
			if err != nil {
				return s.finish(handle, err)
			}
		}
		// The probes wake the reader only for batches (see wakeup_flags in
		// uprobes.c): the deadline bounds how long a lone call waits.
		s.Set.SetDeadline(time.Now().Add(100 * time.Millisecond))
		err := s.Set.Read(&rec)
		switch {
		case err == nil:
			handle(&rec)
		case errors.Is(err, os.ErrDeadlineExceeded):
			if alive(s.PID) != nil {
				return s.finish(handle, fmt.Errorf("PID %d: %w", s.PID, ErrTargetExited))
			}
		default:
			return s.finish(handle, err)
		}
	}
	return s.finish(handle, nil)
}

// finish detaches the probes and reports every call they saw: those that
// return while the uprobes are being removed, then those still in flight.
func (s *Session) finish(handle func(*probe.Record), cause error) error {
	if s.cfg.Detaching != nil {
		defer s.cfg.Detaching(s.Set.Uprobes())()
	}
	return errors.Join(cause, s.Set.Stop(handle))
}

// Counters returns the BPF counters per function name.
func (s *Session) Counters() (map[string]probe.Counters, error) {
	cs, err := s.Set.Counters()
	if err != nil {
		return nil, err
	}
	out := make(map[string]probe.Counters, len(cs))
	for id, c := range cs {
		out[s.Set.Probes()[id].Func.Name] = c
	}
	return out, nil
}

// Close detaches the probes and closes the executable.
func (s *Session) Close() error {
	return errors.Join(s.Set.Close(), s.File.Close())
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
	for _, ec := range ecs {
		if ec.Probe < 0 || ec.Probe >= len(probes) {
			continue
		}
		sc := StackCount{Func: probes[ec.Probe].Func.Name, Count: ec.Count}
		if ec.StackID >= 0 && s.builder.Stack != nil {
			// A stack that cannot be read still counts.
			sc.Stack, _ = s.builder.StackFrames(ec.StackID)
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b StackCount) int { return cmp.Compare(b.Count, a.Count) })
	return out, nil
}
