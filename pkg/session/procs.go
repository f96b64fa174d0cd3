package session

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// A Process is one process that ran the traced executable, in a session
// that traces every process running it (Config.PID 0).
type Process struct {
	// Process is what /proc said of it at its first call: only PID is
	// set when it exited before it could be read (Err).
	container.Process
	// Err says why the process could not be read: it exited first.
	Err    error
	Seen   time.Time // its first call
	Exited time.Time // zero while it runs
	// ExitStatus is how it exited, as a shell shows it, when ExitKnown:
	// it can be read only before its parent reaps it.
	ExitStatus int
	ExitKnown  bool
}

func (p Process) String() string {
	if p.Comm == "" {
		return fmt.Sprintf("pid %d", p.PID)
	}
	return p.Process.String()
}

// keepExited is how many exited processes stay known: their last records
// can still be in the ring buffer when the exit is seen.
const keepExited = 4096

// processes follows the processes running a traced executable: each is
// read on its first record and watched until it exits.
type processes struct {
	file      *symbols.File
	interrupt func() // wakes Run's reader
	mu        sync.Mutex
	byPID     map[int]*tracked
	exited    []int // PIDs in order of exit, oldest first
	pending   []int // PIDs whose exit Run has not handled yet
}

type tracked struct {
	Process
	// bias is the process's load bias, known (biasOK) from its first
	// stack: a PIE is loaded at an address of each process's own.
	bias   uint64
	biasOK bool
	stop   func()
}

func newProcesses(f *symbols.File, interrupt func()) *processes {
	return &processes{file: f, interrupt: interrupt, byPID: map[int]*tracked{}}
}

// see returns the process pid when its record is the first seen of it;
// nil when it is known. Run's goroutine only.
func (ps *processes) see(pid int) *Process {
	ps.mu.Lock()
	t, ok := ps.byPID[pid]
	ps.mu.Unlock()
	if ok && (t.Exited.IsZero() || !reused(t)) {
		return nil
	}
	t = &tracked{Process: Process{Process: container.Process{PID: pid}, Seen: time.Now()}}
	if p, err := container.ReadProcess(pid); err != nil {
		t.Err = err
	} else {
		t.Process.Process = p
	}
	t.biasOK = !ps.file.PIE
	ps.mu.Lock()
	ps.byPID[pid] = t
	ps.mu.Unlock()
	startTime := t.StartTime
	stop, err := onExit(pid, func() {
		// Read now: the parent reaps it at any moment.
		status, known := container.ExitStatus(pid, startTime)
		ps.mu.Lock()
		t.ExitStatus, t.ExitKnown = status, known
		ps.pending = append(ps.pending, pid)
		ps.mu.Unlock()
		ps.interrupt()
	})
	ps.mu.Lock()
	if err != nil {
		// Gone already: its exit is now.
		ps.pending = append(ps.pending, pid)
		stop = func() {}
	}
	t.stop = stop
	ps.mu.Unlock()
	p := t.Process
	return &p
}

// reused says whether the PID of exited process t runs another process
// now. Only records that were in flight at its exit come after it, so this
// reads /proc rarely.
func reused(t *tracked) bool {
	if t.StartTime == 0 {
		return false
	}
	p, err := container.ReadProcess(t.PID)
	return err == nil && p.StartTime != t.StartTime
}

// exits returns the PIDs that exited since the last call.
func (ps *processes) exits() []int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	pids := ps.pending
	ps.pending = nil
	return pids
}

// exit marks process pid exited and returns it.
func (ps *processes) exit(pid int) (Process, bool) {
	ps.mu.Lock()
	t, ok := ps.byPID[pid]
	if !ok || !t.Exited.IsZero() {
		ps.mu.Unlock()
		return Process{}, false
	}
	t.Exited = time.Now()
	stop := t.stop
	ps.mu.Unlock()
	// Its watcher has called back already: this waits for no exit.
	if stop != nil {
		stop()
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.exited = append(ps.exited, pid)
	if len(ps.exited) > keepExited {
		old := ps.exited[0]
		ps.exited = ps.exited[1:]
		if o := ps.byPID[old]; o != nil && !o.Exited.IsZero() {
			delete(ps.byPID, old)
		}
	}
	return t.Process, true
}

// learnBias learns the load bias of process pid, if unknown, from a stack
// recorded at the entry uprobe at file offset site (biasFrom). No read of
// /proc/PID/maps, which a short-lived process may have left before its
// first record is read.
func (ps *processes) learnBias(pid int, site uint64, stack func() ([]uint64, error)) {
	ps.mu.Lock()
	t, ok := ps.byPID[pid]
	known := !ok || t.biasOK
	ps.mu.Unlock()
	if known {
		return
	}
	pcs, err := stack()
	if err != nil {
		return
	}
	if bias, ok := biasFrom(ps.file, site, pcs); ok {
		ps.mu.Lock()
		t.bias, t.biasOK = bias, true
		ps.mu.Unlock()
	}
}

// biasFrom returns the load bias of the process that recorded pcs at the
// entry uprobe at file offset site of f: the first address is where the
// uprobe fired, or the next byte (x86 int3), and a load bias is a whole
// number of pages.
func biasFrom(f *symbols.File, site uint64, pcs []uint64) (uint64, bool) {
	text := f.TextSegment()
	vaddr := site - text.Off + text.Vaddr
	if len(pcs) == 0 || pcs[0] < vaddr {
		return 0, false
	}
	return (pcs[0] - vaddr) &^ (pageSize - 1), true
}

// pageSize is the smallest alignment of a load bias on amd64 and arm64.
const pageSize = 4096

// bias returns the load bias of process pid.
func (ps *processes) bias(pid int) (uint64, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if t, ok := ps.byPID[pid]; ok {
		return t.bias, t.biasOK
	}
	return 0, !ps.file.PIE
}

// close stops watching the processes.
func (ps *processes) close() {
	ps.mu.Lock()
	var stops []func()
	for _, t := range ps.byPID {
		if t.Exited.IsZero() && t.stop != nil {
			stops = append(stops, t.stop)
			t.stop = nil
		}
	}
	ps.mu.Unlock()
	// A watcher calling back takes the lock.
	for _, stop := range stops {
		stop()
	}
}

// onExit calls exited, on a goroutine of its own, when process pid exits:
// its pidfd becomes readable then, before the process is reaped. Through
// the runtime's poller, so a wait costs no thread; stop ends the wait.
func onExit(pid int, exited func()) (stop func(), err error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		first := true
		if rc.Read(func(uintptr) bool { ready := !first; first = false; return ready }) == nil {
			exited()
		}
	}()
	return func() {
		f.Close()
		<-ended
	}, nil
}
