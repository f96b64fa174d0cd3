package syscalls

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	bpf "github.com/cilium-tracer/tracer/bpf/syscalls"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

// DefaultSpanMin is the shortest system call reported on its own; the
// shorter ones are counted per call.
const DefaultSpanMin = time.Millisecond

// Attachment names how the programs run, for the first line of a trace.
const Attachment = "raw tracepoints sys_enter, sys_exit, sched_process_exec, signal_generate; tracepoint sched_process_fork"

// Options configure a Set.
type Options struct {
	// Goroutines is the uprobe programs' goroutine table
	// (probe.Set.Goroutines): a system call belongs to the innermost
	// traced call in flight on its goroutine. Nil gives the programs an
	// empty table of their own: they follow no call, and cost every
	// system call what they cost the processes they do not follow, which
	// is how that cost is measured.
	Goroutines *ebpf.Map
	// SpanMin: system calls at least this long are Events of their own,
	// the others only count in their call's Totals. Default
	// DefaultSpanMin.
	SpanMin time.Duration
}

// A Set is the syscall programs, attached.
type Set struct {
	objs   bpf.SyscallsObjects
	links  []link.Link
	reader *ringbuf.Reader
}

// Attach loads the programs and attaches them. They follow no process until
// Watch.
func Attach(o Options) (_ *Set, err error) {
	if err := kernel.Probe().Require(kernel.RawTracepoints, kernel.ProbeReadKernel); err != nil {
		return nil, fmt.Errorf("syscalls: %w", err)
	}
	spec, err := bpf.LoadSyscalls()
	if err != nil {
		return nil, fmt.Errorf("syscalls: load BPF spec: %w", err)
	}
	if o.SpanMin <= 0 {
		o.SpanMin = DefaultSpanMin
	}
	if err := spec.Variables["span_min_ns"].Set(uint64(o.SpanMin)); err != nil {
		return nil, fmt.Errorf("syscalls: set span_min_ns: %w", err)
	}
	dataloc, err := forkLayout()
	if err != nil {
		return nil, fmt.Errorf("syscalls: %w", err)
	}
	s := &Set{}
	opts := &ebpf.CollectionOptions{}
	if o.Goroutines != nil {
		opts.MapReplacements = map[string]*ebpf.Map{"gstates": o.Goroutines}
	} else {
		// Preallocated: the uprobes' table is 15 MiB, an unused one
		// needs no room.
		spec.Maps["gstates"].MaxEntries = 1
	}
	if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
		return nil, fmt.Errorf("syscalls: load BPF programs: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	fork := s.objs.ForkComm16
	if dataloc {
		fork = s.objs.ForkDataloc
	}
	// The ends first: a syscall or child seen starting is seen ending.
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"signal_generate", s.objs.ChildExit},
		{"sched_process_exec", s.objs.ProcExec},
		{"sched_process_fork", fork},
		{"sys_exit", s.objs.SysExit},
		{"sys_enter", s.objs.SysEnter},
	} {
		var l link.Link
		if tp.name == "sched_process_fork" {
			l, err = link.Tracepoint("sched", tp.name, tp.prog, nil)
		} else {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: tp.prog})
		}
		if err != nil {
			return nil, fmt.Errorf("syscalls: attach to %s: %w", tp.name, err)
		}
		s.links = append(s.links, l)
	}
	if s.reader, err = ringbuf.NewReader(s.objs.ScEvents); err != nil {
		return nil, fmt.Errorf("syscalls: open ring buffer: %w", err)
	}
	return s, nil
}

// Watch follows the system calls of process tgid.
func (s *Set) Watch(tgid int) error {
	if err := s.objs.Targets.Put(uint32(tgid), uint32(1)); err != nil {
		return fmt.Errorf("syscalls: follow PID %d: %w", tgid, err)
	}
	return nil
}

// Unwatch stops following process tgid.
func (s *Set) Unwatch(tgid int) {
	s.objs.Targets.Delete(uint32(tgid))
}

// Close detaches the programs and frees them.
func (s *Set) Close() error {
	for _, l := range s.links {
		l.Close()
	}
	s.links = nil
	if s.reader != nil {
		s.reader.Close()
	}
	return s.objs.Close()
}

// An Event is one system call of a traced call at least Options.SpanMin
// long, a child process a traced call started, or the start of one. Times
// are CLOCK_MONOTONIC nanoseconds.
type Event struct {
	Call       uint64 // the traced call's ID
	Start, End uint64
	PID, TID   int
	// Name is the syscall's name: "read", "bpf BPF_PROG_LOAD", "netlink
	// sendmsg"; for a child process its command.
	Name string
	// Ret is what the syscall returned: a negative errno on failure.
	Ret int64
	// Child: the event is a child process, from the start of the clone
	// that made it to its exit; Ret is its PID, Exec when it called
	// execve (0: never).
	Child bool
	Exec  uint64
	// ChildStart: the event is the start of a child process, written at
	// its clone, End 0: its exit comes later as a Child event with the
	// same Ret, unless it outlives the events' reader. Name is its
	// parent's command.
	ChildStart bool
	// Running: a Child still running at its call's end (see Set.Running).
	Running bool
}

// Read passes every event waiting to handle, and returns when there are no
// more: events of a call are waiting before its record is read, for the
// syscall ended, and a child was waited for, before the call returned.
func (s *Set) Read(handle func(Event)) error {
	// Most calls made no long syscall: no epoll_wait for them.
	if s.reader.AvailableBytes() == 0 {
		return nil
	}
	s.reader.SetDeadline(time.Now())
	var rec ringbuf.Record
	for {
		if err := s.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("syscalls: read ring buffer: %w", err)
		}
		if len(rec.RawSample) < int(unsafe.Sizeof(bpf.SyscallsScEvent{})) {
			return fmt.Errorf("syscalls: short record of %d bytes", len(rec.RawSample))
		}
		e := (*bpf.SyscallsScEvent)(unsafe.Pointer(&rec.RawSample[0]))
		ev := Event{Call: e.CallId, Start: e.StartNs, End: e.EndNs, PID: int(e.Tgid), TID: int(e.Tid), Ret: e.Ret}
		switch e.Nr {
		case nrChild:
			ev.Child, ev.Exec, ev.Name = true, e.ExecNs, comm(e.Comm)
		case nrChildStart:
			ev.ChildStart, ev.Name = true, comm(e.Comm)
		default:
			ev.Name = Name(e.What)
		}
		handle(ev)
	}
}

// An event's syscall number for a child process (NR_CHILD) and for its
// start (NR_CHILD_START).
const (
	nrChild      = 0xffffffff
	nrChildStart = 0xfffffffe
)

// comm returns a command name the kernel wrote.
func comm(c [16]int8) string {
	return string(bytes.TrimRight(unsafe.Slice((*byte)(unsafe.Pointer(&c[0])), len(c)), "\x00"))
}

// Running returns child process pid of call id if it has not exited: a
// Running Child event with End 0, named by its command now (its parent's
// until it execs). A child whose start was read and its exit not is either
// still running or exited since: then Running returns false, and its exit
// event is waiting, written before the child left the table.
func (s *Set) Running(id uint64, pid int) (Event, bool, error) {
	var c bpf.SyscallsChild
	if err := s.objs.Children.Lookup(uint32(pid), &c); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Event{}, false, nil
		}
		return Event{}, false, fmt.Errorf("syscalls: child %d: %w", pid, err)
	}
	if c.CallId != id {
		// The PID was reused by a child of another call.
		return Event{}, false, nil
	}
	return Event{Call: id, Start: c.StartNs, PID: int(c.Tgid), TID: pid, Name: comm(c.Comm), Ret: int64(pid), Child: true, Exec: c.ExecNs, Running: true}, true, nil
}

// A Total is how many system calls of one kind a traced call made that were
// shorter than Options.SpanMin, and their time.
type Total struct {
	Name  string
	Count int
	Time  time.Duration
}

// Totals returns the counts of call id's short system calls and forgets
// them: once its record is read the call is over.
func (s *Set) Totals(id uint64) ([]Total, error) {
	// A lookup, then a delete: a hash map's lookup-and-delete needs Linux
	// 5.14. No program writes the entry again, its call having ended.
	var a bpf.SyscallsAgg
	if err := s.objs.Aggs.Lookup(id, &a); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("syscalls: counts of call %d: %w", id, err)
	}
	if err := s.objs.Aggs.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("syscalls: counts of call %d: %w", id, err)
	}
	var out []Total
	for _, sl := range a.Slots {
		if sl.Count > 0 {
			out = append(out, Total{Name: Name(sl.What), Count: int(sl.Count), Time: time.Duration(sl.Ns)})
		}
	}
	if a.Other.Count > 0 {
		out = append(out, Total{Name: "other", Count: int(a.Other.Count), Time: time.Duration(a.Other.Ns)})
	}
	return out, nil
}

// forkLayout reads the format of the sched_process_fork tracepoint from
// tracefs: whether its comms are dynamic strings (Linux 6.x), which moves
// child_pid from offset 44 to 20.
func forkLayout() (dataloc bool, err error) {
	var b []byte
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if b, err = os.ReadFile(dir + "/events/sched/sched_process_fork/format"); err == nil {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("format of sched_process_fork (is tracefs mounted?): %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, " child_pid;") {
			continue
		}
		switch {
		case strings.Contains(line, "offset:44;"):
			return false, nil
		case strings.Contains(line, "offset:20;"):
			return true, nil
		}
		return false, fmt.Errorf("sched_process_fork: child_pid in a layout this tracer does not know: %q", strings.TrimSpace(line))
	}
	return false, errors.New("sched_process_fork: no child_pid in its format")
}

// Dropped returns how many events were lost to a full ring buffer: system
// calls and child processes missing from their calls.
func (s *Set) Dropped() (uint64, error) {
	n, err := sum(s.objs.ScDropped)
	if err != nil {
		return 0, fmt.Errorf("syscalls: read drop counters: %w", err)
	}
	return n, nil
}

// Runs returns how many times the programs at system calls' entry and exit
// have run since Attach: twice per system call made on the node, by any
// process, while they were attached. Each run costs its process whether or
// not it is followed; the programs at process forks, execs and signals run
// far less often and are not counted.
func (s *Set) Runs() (uint64, error) {
	n, err := sum(s.objs.ScRuns)
	if err != nil {
		return 0, fmt.Errorf("syscalls: read run counters: %w", err)
	}
	return n, nil
}

// sum adds up the per-CPU values of a one-entry counter map.
func sum(m *ebpf.Map) (uint64, error) {
	var per []uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		return 0, err
	}
	var n uint64
	for _, x := range per {
		n += x
	}
	return n, nil
}
