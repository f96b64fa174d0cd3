package export

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
)

// TextExporter writes one line per call: start time, duration, goroutine
// ("g=?" when unknown), function, captured attributes, and why the call is unfinished if it is.
// With Stacks set, the call's stack follows, one indented frame per line.
type TextExporter struct {
	w         io.Writer
	stacks    bool
	processes bool      // name each call's process
	closer    io.Closer // closed by Shutdown: a file NewExporters opened
	guard
}

// NewTextExporter returns a TextExporter writing to w.
func NewTextExporter(w io.Writer, stacks bool) *TextExporter {
	return &TextExporter{w: w, stacks: stacks}
}

var _ Exporter = (*TextExporter)(nil)

// Export implements Exporter.
func (e *TextExporter) Export(_ context.Context, spans []Span) error {
	var buf bytes.Buffer
	for i := range spans {
		s := &spans[i]
		c := &s.Call
		g := "?"
		if c.Goroutine != 0 {
			g = strconv.FormatUint(c.Goroutine, 10)
		}
		fmt.Fprintf(&buf, "%s %12s g=%-6s ", s.Start.Format("15:04:05.000000"), c.Duration.Round(time.Microsecond), g)
		if e.processes {
			fmt.Fprintf(&buf, "pid=%-7d ", c.PID)
		}
		buf.WriteString(s.Name)
		for _, a := range c.Attrs {
			fmt.Fprintf(&buf, " %s=%s", a.Key, a.Value)
		}
		if c.Unfinished {
			fmt.Fprintf(&buf, " UNFINISHED: %s", s.StatusMessage)
		}
		if e := c.Error; e != nil {
			fmt.Fprintf(&buf, " ERROR %s", e.Type)
			if e.Message != "" {
				fmt.Fprintf(&buf, ": %q", e.Message)
			}
		}
		if c.Breakdown != nil {
			fmt.Fprintf(&buf, " [%s]", c.Breakdown)
		}
		buf.WriteByte('\n')
		waterfall(&buf, c)
		if e.stacks {
			for _, f := range c.Stack {
				fmt.Fprintf(&buf, "    %s\n        %s:%d", f.Func, f.File, f.Line)
				if f.Inlined {
					buf.WriteString(" (inlined)")
				}
				buf.WriteByte('\n')
			}
		}
	}
	return e.write(buf.Bytes())
}

func (e *TextExporter) write(b []byte) error {
	return e.export(func() error {
		if _, err := e.w.Write(b); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	})
}

// Shutdown implements Exporter. It does not close a writer given to
// NewTextExporter or NewJSONExporter.
func (e *TextExporter) Shutdown(context.Context) error {
	return e.shutdown(func() error {
		if e.closer == nil {
			return nil
		}
		return e.closer.Close()
	})
}

// JSONExporter writes one JSON object per call and line.
type JSONExporter struct {
	TextExporter
}

// NewJSONExporter returns a JSONExporter writing to w.
func NewJSONExporter(w io.Writer) *JSONExporter {
	return &JSONExporter{TextExporter{w: w}}
}

var _ Exporter = (*JSONExporter)(nil)

// JSONSpan is the shape of one line written by JSONExporter.
type JSONSpan struct {
	Time         time.Time         `json:"time"`
	DurationNS   int64             `json:"duration_ns"`
	TraceID      string            `json:"trace_id"`
	SpanID       string            `json:"span_id"`
	ParentSpanID string            `json:"parent_span_id,omitempty"`
	Name         string            `json:"name"`
	Function     string            `json:"function"`
	PID          int               `json:"pid"`
	Goroutine    uint64            `json:"goroutine,omitempty"` // absent when unknown
	Unfinished   bool              `json:"unfinished,omitempty"`
	Reason       string            `json:"reason,omitempty"` // why it is unfinished
	Error        *calls.Error      `json:"error,omitempty"`
	SampleRate   uint32            `json:"sample_rate,omitempty"`
	MinDuration  int64             `json:"min_duration_ns,omitempty"`
	Attrs        map[string]string `json:"attrs,omitempty"`
	Stack        []JSONFrame       `json:"stack,omitempty"`
	Breakdown    *JSONBreakdown    `json:"breakdown,omitempty"`
	// The call's system calls and child processes (their spans'
	// parent is this one), and the counts of its short system calls.
	Syscalls      []JSONSyscall      `json:"syscalls,omitempty"`
	SyscallTotals []JSONSyscallTotal `json:"syscall_totals,omitempty"`
}

// JSONSyscall is one system call or child process of a call
// (calls.Syscall).
type JSONSyscall struct {
	Time       time.Time `json:"time"`
	DurationNS int64     `json:"duration_ns"`
	SpanID     string    `json:"span_id"`
	Name       string    `json:"name"`
	Ret        int64     `json:"ret"` // a child's PID
	Child      bool      `json:"child,omitempty"`
	// Running: a child still running at the call's end, where it ends.
	Running bool `json:"running,omitempty"`
}

// JSONSyscallTotal counts a call's short system calls of one name
// (calls.SyscallTotal).
type JSONSyscallTotal struct {
	Name   string `json:"name"`
	Count  int    `json:"count"`
	TimeNS int64  `json:"time_ns"`
}

// JSONBreakdown is where a call's time went (calls.Breakdown), in ns.
type JSONBreakdown struct {
	Samples    int              `json:"samples"`
	MaxGapNS   int64            `json:"max_gap_ns"`
	CPUNS      int64            `json:"cpu_ns"`
	RunnableNS int64            `json:"runnable_ns"`
	SyscallNS  int64            `json:"syscall_ns"`
	BlockedNS  map[string]int64 `json:"blocked_ns,omitempty"`
	Where      []JSONPlace      `json:"where,omitempty"`
}

// JSONPlace is where a call's goroutine waited, with its share of the
// call's time.
type JSONPlace struct {
	State string  `json:"state"`
	Func  string  `json:"func"`
	File  string  `json:"file"`
	Line  int     `json:"line"`
	Share float64 `json:"share"`
}

// JSONFrame is one stack frame of a JSONSpan.
type JSONFrame struct {
	Func    string `json:"func"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Inlined bool   `json:"inlined,omitempty"`
}

// Export implements Exporter.
func (e *JSONExporter) Export(_ context.Context, spans []Span) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range spans {
		s := &spans[i]
		c := &s.Call
		js := JSONSpan{
			Time:        s.Start,
			DurationNS:  c.Duration.Nanoseconds(),
			TraceID:     s.TraceID.String(),
			SpanID:      s.SpanID.String(),
			Name:        s.Name,
			Function:    c.Func,
			PID:         c.PID,
			Goroutine:   c.Goroutine,
			Unfinished:  c.Unfinished,
			Error:       c.Error,
			SampleRate:  c.SampleRate,
			MinDuration: c.MinDuration.Nanoseconds(),
		}
		if s.ParentSpanID.IsValid() {
			js.ParentSpanID = s.ParentSpanID.String()
		}
		if c.Unfinished {
			js.Reason = s.StatusMessage
		}
		if len(c.Attrs) > 0 {
			js.Attrs = make(map[string]string, len(c.Attrs))
			for _, a := range c.Attrs {
				js.Attrs[a.Key] = a.Value
			}
		}
		for _, f := range c.Stack {
			js.Stack = append(js.Stack, JSONFrame{Func: f.Func, File: f.File, Line: f.Line, Inlined: f.Inlined})
		}
		if b := c.Breakdown; b != nil {
			jb := &JSONBreakdown{Samples: b.Samples, MaxGapNS: b.MaxGap.Nanoseconds(), CPUNS: b.CPU.Nanoseconds(), RunnableNS: b.Runnable.Nanoseconds(), SyscallNS: b.Syscall.Nanoseconds()}
			if len(b.Blocked) > 0 {
				jb.BlockedNS = make(map[string]int64, len(b.Blocked))
				for r, d := range b.Blocked {
					jb.BlockedNS[r] = d.Nanoseconds()
				}
			}
			for _, p := range b.Top() {
				jb.Where = append(jb.Where, JSONPlace{State: p.State, Func: p.Func, File: p.File, Line: p.Line, Share: p.Share})
			}
			js.Breakdown = jb
		}
		for j, sc := range c.Syscalls {
			js.Syscalls = append(js.Syscalls, JSONSyscall{Time: sc.Start, DurationNS: sc.Duration.Nanoseconds(), SpanID: s.Children[j].SpanID.String(), Name: sc.Name, Ret: sc.Ret, Child: sc.Child, Running: sc.Running})
		}
		for _, t := range c.SyscallTotals {
			js.SyscallTotals = append(js.SyscallTotals, JSONSyscallTotal{Name: t.Name, Count: t.Count, TimeNS: t.Time.Nanoseconds()})
		}
		if err := enc.Encode(&js); err != nil {
			return fmt.Errorf("encode span %s: %w", s.SpanID, err)
		}
	}
	return e.write(buf.Bytes())
}

// waterfallWidth is the width of a waterfall's bars.
const waterfallWidth = 40

// waterfall draws the system calls and child processes of c under its line,
// each as a bar where it falls in the call, then the counts of the short
// ones:
//
//	+31.2ms [       ====                             ]  30.2ms read
//	+95.0ms [                  ========              ]  32.1ms child cilium-agent (pid 4242)
//	+98.5ms [                                ========]  12.0ms child clang (pid 4243) still running
//	short syscalls: close 9× 35µs · pipe2 2× 21µs
func waterfall(buf *bytes.Buffer, c *calls.Call) {
	for _, sc := range c.Syscalls {
		off := sc.Start.Sub(c.Start)
		from, to := 0, 0
		if c.Duration > 0 {
			from = int(min(max(off, 0), c.Duration) * waterfallWidth / c.Duration)
			to = int(min(max(off+sc.Duration, 0), c.Duration) * waterfallWidth / c.Duration)
		}
		from = min(from, waterfallWidth-1)
		to = min(max(to, from+1), waterfallWidth)
		bar := strings.Repeat(" ", from) + strings.Repeat("=", to-from) + strings.Repeat(" ", waterfallWidth-to)
		name := sc.Name
		if sc.Child {
			name = fmt.Sprintf("child %s (pid %d)", sc.Name, sc.Ret)
			if sc.Running {
				name += " still running"
			}
		}
		fmt.Fprintf(buf, "    %10s [%s] %10s %s\n", "+"+off.Round(time.Microsecond).String(), bar, sc.Duration.Round(time.Microsecond), name)
	}
	if len(c.SyscallTotals) == 0 {
		return
	}
	parts := make([]string, len(c.SyscallTotals))
	for i, t := range c.SyscallTotals {
		parts[i] = fmt.Sprintf("%s %d× %s", t.Name, t.Count, t.Time.Round(time.Microsecond))
	}
	fmt.Fprintf(buf, "    short syscalls: %s\n", strings.Join(parts, " · "))
}
