package calls

import (
	"time"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// A Call is one traced function call, completed or not.
type Call struct {
	Func    string // fully qualified Go function name
	ProbeID uint32

	// ID identifies the call within a tracing session. ParentID is the ID
	// of the innermost traced call that was in flight on the same goroutine
	// when this one started (0: none); RootID is the ID of the outermost
	// such call (itself when ParentID is 0). Together they form trace trees
	// without buffering: children finish before their parents.
	ID, ParentID, RootID uint64

	PID       int    // host PID of the traced process
	Goroutine uint64 // goroutine ID (goid); 0 when unknown (see Builder.GoidUnknown)

	Start    time.Time     // wall clock
	Duration time.Duration // for unfinished calls: time until the call was given up

	// Depth is the distance in bytes between the goroutine's stack top and
	// the stack pointer at entry; deeper calls have larger depths.
	Depth uint64

	// Stack is the caller stack at entry, innermost first: the traced
	// function itself, then its immediate caller, with inlined frames
	// expanded. Calls with the same stack share the slice: do not modify
	// it.
	Stack []symbols.Frame

	// Unfinished is set for calls that never returned through a RET: the
	// goroutine panicked, called runtime.Goexit, or the entry expired.
	Unfinished bool
	Reason     string // why the call is unfinished

	SampleRate  uint32        // 1-in-N sampling in force for this probe (1: every call)
	MinDuration time.Duration // threshold in force for this probe (0: none)

	Attrs []Attr // captured receiver/argument fields and results

	// Error is the non-nil error the call returned, for functions whose
	// last result is error; nil otherwise.
	Error *Error

	// Breakdown is where the time went, for probes that sample their
	// calls' goroutines (nil otherwise, or without a sample).
	Breakdown *Breakdown

	// Syscalls are the system calls at least the session's syscall
	// threshold long that the call made itself (not in its traced
	// children), and the child processes it started, by start.
	// SyscallTotals count its shorter system calls by name. Both nil
	// unless the session follows system calls.
	Syscalls      []Syscall
	SyscallTotals []SyscallTotal
}

// A Syscall is one system call of a call, or a child process it started.
type Syscall struct {
	// Name is the syscall's: "read", "bpf BPF_PROG_LOAD", "netlink
	// sendmsg"; a child's is its command.
	Name     string
	Start    time.Time
	Duration time.Duration
	Ret      int64 // a negative errno on failure; a child's PID
	// Child: a child process, from the start of the clone that made it to
	// its exit, or to the call's end if Running.
	Child bool
	// Running: a child process still running at the call's end.
	Running bool
}

// A SyscallTotal is how many system calls of one name, each shorter than
// the session's syscall threshold, a call made, and their time.
type SyscallTotal struct {
	Name  string
	Count int
	Time  time.Duration
}

// An Error is an error a call returned.
type Error struct {
	Type string `json:"type"` // the dynamic type, as %T prints it
	// Message is the error's message; "" for types whose message the
	// probes do not read (only the common concrete types).
	Message string `json:"message,omitempty"`
}

// An Attr is one captured value.
type Attr struct {
	Key   string
	Value string
}

// A Breakdown estimates where a call's time went, from samples of its
// goroutine's state taken while the call ran: each sample stands for the
// time since the one before, and the last for the rest of the call.
// Samples says how far to trust it: three samples are no measurement.
type Breakdown struct {
	Samples int
	// MaxGap is the longest time between two samples, or between the
	// call's start and the first: a state change is placed within half
	// of it. Sampling that a loaded node delays shows here.
	MaxGap   time.Duration
	CPU      time.Duration // running Go code on a thread
	Runnable time.Duration // ready, waiting for a thread
	Syscall  time.Duration // in a system call
	// Blocked is the time parked in the runtime, by why: "mutex",
	// "rwmutex", "chan send", "chan receive", "select", "sleep",
	// "IO wait", "GC assist", "cond" or "other".
	Blocked map[string]time.Duration
	// Where are the places it waited (parked, in a system call, or
	// runnable after either), the largest share first: the first frame
	// outside the runtime and sync.
	Where []Place
}

// A Place is where a goroutine waited, in which state, and its share of
// the call's time.
type Place struct {
	State string // "syscall", "runnable", or a Blocked reason
	Func  string
	File  string
	Line  int
	Share float64 // of the call's time
}
