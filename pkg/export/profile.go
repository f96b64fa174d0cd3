package export

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// selfTimes turns call durations into self times: a call's duration minus
// the durations of its traced children. Weighting profile samples by self
// time makes a parent's cumulative time, which its children's stacks also
// contribute to, equal its duration instead of counting the children twice.
// Children finish before their parents, so their sums are ready in time.
type selfTimes struct {
	children map[uint64]time.Duration // parent call ID -> sum of children
}

// maxPendingParents bounds the memory held for parents not seen yet (a
// parent whose end was lost); past it, sums are forgotten and those parents
// get their full duration.
const maxPendingParents = 1 << 16

func (st *selfTimes) self(c *calls.Call) time.Duration {
	if st.children == nil {
		st.children = map[uint64]time.Duration{}
	}
	if c.ParentID != 0 {
		if len(st.children) >= maxPendingParents {
			clear(st.children)
		}
		st.children[c.ParentID] += c.Duration
	}
	d := c.Duration - st.children[c.ID]
	delete(st.children, c.ID)
	return max(d, 0)
}

// PprofExporter aggregates calls into a pprof profile, written on Shutdown:
// one sample per distinct stack, with the number of calls (calls/count) and
// their self time (wall/nanoseconds, the default), inlined frames as extra
// lines of a location. `go tool pprof -top FILE` ranks the traced functions
// by time spent in them.
type PprofExporter struct {
	w io.Writer
	// blocked: samples are the places calls waited, not the calls.
	blocked bool

	guard
	self    selfTimes
	p       *profile.Profile
	funcs   map[[2]string]*profile.Function
	locs    map[string]*profile.Location
	samples map[string]*profile.Sample
	first   time.Time
	last    time.Time
}

var _ Exporter = (*PprofExporter)(nil)

// NewPprofExporter returns a PprofExporter that writes the gzipped profile
// to w when shut down.
func NewPprofExporter(w io.Writer) *PprofExporter {
	mapping := &profile.Mapping{
		ID: 1, Limit: ^uint64(0),
		HasFunctions: true, HasFilenames: true, HasLineNumbers: true, HasInlineFrames: true,
	}
	return &PprofExporter{
		w: w,
		p: &profile.Profile{
			SampleType: []*profile.ValueType{
				{Type: "calls", Unit: "count"},
				{Type: "wall", Unit: "nanoseconds"},
			},
			DefaultSampleType: "wall",
			PeriodType:        &profile.ValueType{Type: "wall", Unit: "nanoseconds"},
			Period:            1,
			Mapping:           []*profile.Mapping{mapping},
		},
		funcs:   map[[2]string]*profile.Function{},
		locs:    map[string]*profile.Location{},
		samples: map[string]*profile.Sample{},
	}
}

// NewBlockedProfileExporter returns a PprofExporter of where the calls
// waited, an off-CPU profile written to w when shut down: one sample per
// place a call's goroutine waited (parked, in a system call, or runnable
// after either; calls.Breakdown.Where) under the call's stack, labelled
// with the state, with the calls that waited there (calls/count) and the
// time (blocked/nanoseconds, the default). Calls without a breakdown add
// nothing.
func NewBlockedProfileExporter(w io.Writer) *PprofExporter {
	e := NewPprofExporter(w)
	e.blocked = true
	e.p.SampleType[1] = &profile.ValueType{Type: "blocked", Unit: "nanoseconds"}
	e.p.DefaultSampleType = "blocked"
	e.p.PeriodType = &profile.ValueType{Type: "blocked", Unit: "nanoseconds"}
	return e
}

// Export implements Exporter.
func (e *PprofExporter) Export(_ context.Context, spans []Span) error {
	return e.export(func() error {
		e.add(spans)
		return nil
	})
}

func (e *PprofExporter) add(spans []Span) {
	for i := range spans {
		c := &spans[i].Call
		if e.first.IsZero() || c.Start.Before(e.first) {
			e.first = c.Start
		}
		if end := c.Start.Add(c.Duration); end.After(e.last) {
			e.last = end
		}
		self := e.self.self(c)
		if !e.blocked {
			e.sample(e.locations(c.Stack), "", self)
			continue
		}
		if c.Breakdown == nil || len(c.Stack) == 0 {
			continue
		}
		for _, w := range c.Breakdown.Where {
			frames := append([]symbols.Frame{{Func: w.Func, File: w.File, Line: w.Line}}, c.Stack...)
			e.sample(e.locations(frames), w.State, time.Duration(w.Share*float64(c.Duration)))
		}
	}
}

// sample adds one call and d to the sample of locs and state.
func (e *PprofExporter) sample(locs []*profile.Location, state string, d time.Duration) {
	if len(locs) == 0 {
		return
	}
	var key strings.Builder
	key.WriteString(state)
	key.WriteByte(':')
	for _, l := range locs {
		key.WriteString(strconv.FormatUint(l.ID, 16))
		key.WriteByte(',')
	}
	s := e.samples[key.String()]
	if s == nil {
		s = &profile.Sample{Location: locs, Value: make([]int64, 2)}
		if state != "" {
			s.Label = map[string][]string{"state": {state}}
		}
		e.samples[key.String()] = s
		e.p.Sample = append(e.p.Sample, s)
	}
	s.Value[0]++
	s.Value[1] += d.Nanoseconds()
}

// locations groups frames into pprof locations, leaf first: a physical
// frame together with the frames inlined into it, innermost first, as
// pprof orders a location's lines.
func (e *PprofExporter) locations(frames []symbols.Frame) []*profile.Location {
	var locs []*profile.Location
	for len(frames) > 0 {
		n := 1
		for n < len(frames) && frames[n-1].Inlined {
			n++
		}
		group := frames[:n]
		frames = frames[n:]

		var key strings.Builder
		for _, f := range group {
			fmt.Fprintf(&key, "%x|%s|%s|%d;", f.PC, f.Func, f.File, f.Line)
		}
		loc := e.locs[key.String()]
		if loc == nil {
			loc = &profile.Location{
				ID:      uint64(len(e.p.Location) + 1),
				Mapping: e.p.Mapping[0],
				Address: group[len(group)-1].PC,
			}
			for _, f := range group {
				loc.Line = append(loc.Line, profile.Line{Function: e.function(f), Line: int64(f.Line)})
			}
			e.locs[key.String()] = loc
			e.p.Location = append(e.p.Location, loc)
		}
		locs = append(locs, loc)
	}
	return locs
}

func (e *PprofExporter) function(f symbols.Frame) *profile.Function {
	k := [2]string{f.Func, f.File}
	fn := e.funcs[k]
	if fn == nil {
		fn = &profile.Function{ID: uint64(len(e.p.Function) + 1), Name: f.Func, SystemName: f.Func, Filename: f.File}
		e.funcs[k] = fn
		e.p.Function = append(e.p.Function, fn)
	}
	return fn
}

// Shutdown writes the profile. Calls exported later are refused.
func (e *PprofExporter) Shutdown(context.Context) error {
	return e.shutdown(e.write)
}

func (e *PprofExporter) write() error {
	e.p.TimeNanos = e.first.UnixNano()
	e.p.DurationNanos = e.last.Sub(e.first).Nanoseconds()
	if err := e.p.CheckValid(); err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	if err := e.p.Write(e.w); err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	return nil
}

// foldedName keeps a function name from breaking the folded format, where
// ';' separates frames and ' ' ends the stack.
var foldedName = strings.NewReplacer(";", ":", " ", "_")

// FoldedExporter aggregates calls into Brendan Gregg's folded stacks
// ("root;...;leaf self-nanoseconds", one line per distinct stack, sorted),
// written on Shutdown, for flamegraph.pl, inferno, speedscope and the like.
// Inlined frames are frames of their own.
type FoldedExporter struct {
	w io.Writer

	guard
	self   selfTimes
	stacks map[string]int64
}

var _ Exporter = (*FoldedExporter)(nil)

// NewFoldedExporter returns a FoldedExporter writing to w when shut down.
func NewFoldedExporter(w io.Writer) *FoldedExporter {
	return &FoldedExporter{w: w, stacks: map[string]int64{}}
}

// Export implements Exporter.
func (e *FoldedExporter) Export(_ context.Context, spans []Span) error {
	return e.export(func() error {
		e.add(spans)
		return nil
	})
}

func (e *FoldedExporter) add(spans []Span) {
	for i := range spans {
		c := &spans[i].Call
		self := e.self.self(c)
		if len(c.Stack) == 0 {
			continue
		}
		var sb strings.Builder
		for j := len(c.Stack) - 1; j >= 0; j-- {
			sb.WriteString(foldedName.Replace(c.Stack[j].Func))
			if j > 0 {
				sb.WriteByte(';')
			}
		}
		e.stacks[sb.String()] += self.Nanoseconds()
	}
}

// Shutdown writes the folded stacks. Calls exported later are refused.
func (e *FoldedExporter) Shutdown(context.Context) error {
	return e.shutdown(e.write)
}

func (e *FoldedExporter) write() error {
	keys := make([]string, 0, len(e.stacks))
	for k := range e.stacks {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s %d\n", k, e.stacks[k])
	}
	if _, err := io.WriteString(e.w, sb.String()); err != nil {
		return fmt.Errorf("folded: %w", err)
	}
	return nil
}
