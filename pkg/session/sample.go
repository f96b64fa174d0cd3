package session

import (
	"cmp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/goroutine"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// DefaultBreakdownEvery is how often the goroutine of an announced call in
// flight is sampled at first: 1 kHz.
const DefaultBreakdownEvery = time.Millisecond

// A call's goroutine is sampled at least every 1/samplesPerElapsed of the
// time the call has run, and at most every BreakdownEvery or maxEvery: a
// long call gets fewer samples per second as it goes on. Each sample
// wakes the sampling thread, which on these VMs costs tens of µs of CPU
// (the wakeup, not the read), so sampling a 2 s call at 1 kHz throughout
// would cost 4% of a CPU for a precision its duration does not need: a
// state change is placed within half an interval, 1% of the call's time
// so far, or 5 ms.
const (
	samplesPerElapsed = 100
	maxEvery          = 10 * time.Millisecond
)

// maxInFlight bounds the announced calls followed at once, as the probes'
// goroutine table bounds the calls in flight.
const maxInFlight = 4096

// samplerNice is the sampling thread's nice value.
const samplerNice = -10

// maxPerTick bounds the goroutines sampled at each tick, round robin past
// it: each sample is a read of the target's memory, a few microseconds, so
// this bounds the tracer's own CPU whatever is in flight.
const maxPerTick = 8

// A sampler reads, every interval, the state of the goroutines that have
// announced calls in flight (probe.Config.Announce), from the target's
// memory: no trap in the target. Each call gets a tally of what its
// goroutine was doing, for its Breakdown.
type sampler struct {
	file    *symbols.File
	offsets *offsets.File
	every   time.Duration

	mu      sync.Mutex
	calls   map[uint64]*inflight // by call ID
	readers map[int]*goroutine.Reader
	next    int // round robin start
	// wake is an eventfd that wakes the sampling thread from its sleep
	// in the kernel: a call announced, or close; -1 if none could be
	// made, and the thread then polls every interval.
	wake    int
	closing sync.Once
	quit    chan struct{}
	done    chan struct{}

	// samples counts the goroutine states read; cpu is the sampling
	// thread's CPU time, set when it ends.
	samples atomic.Uint64
	cpu     time.Duration
}

// inflight is one announced call in flight.
type inflight struct {
	pid  int
	g    uint64
	goid uint64 // 0: unknown
	t    calls.Tally
	// start is when the call started, next when its goroutine is due
	// for a sample (CLOCK_MONOTONIC ns, the probes' clock).
	start, next uint64
	// last is when the last sample was taken, the call's start before
	// any; lastState and lastPlace are what it found.
	last      uint64
	lastState string
	lastPlace *calls.Place
}

func newSampler(f *symbols.File, o *offsets.File, every time.Duration) *sampler {
	s := &sampler{
		file: f, offsets: o, every: every,
		calls: map[uint64]*inflight{}, readers: map[int]*goroutine.Reader{},
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	var err error
	if s.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		s.wake = -1
	}
	go s.run()
	return s
}

// enter starts sampling the goroutine of the call r announces.
func (s *sampler) enter(r *probe.Record, goidKnown bool) {
	s.mu.Lock()
	full := len(s.calls) >= maxInFlight
	s.mu.Unlock()
	if full {
		return // records lost on the way kept calls that never leave
	}
	c := &inflight{pid: r.PID, g: r.G, start: r.Start, last: r.Start}
	if goidKnown {
		c.goid = r.Goroutine
	}
	// Ready before the first tick: reading the process's maps and the
	// runtime's tables takes milliseconds, unsampled.
	s.reader(r.PID)
	s.mu.Lock()
	s.calls[r.ID] = c
	s.mu.Unlock()
	s.poke()
}

// poke wakes the sampling thread. Under mu: close may close the eventfd,
// and its number may then name another file.
func (s *sampler) poke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wake >= 0 {
		unix.Write(s.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// leave stops sampling call id, which ended at end, and returns its tally:
// the last state found lasted to the end. Nil if it was not announced.
func (s *sampler) leave(id, end uint64) *calls.Tally {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.calls[id]
	if !ok {
		return nil
	}
	delete(s.calls, id)
	if c.t.Samples > 0 && end > c.last {
		add(&c.t, c.lastState, c.lastPlace, time.Duration(end-c.last))
	}
	return &c.t
}

// close stops the sampling; more calls do nothing.
func (s *sampler) close() {
	s.closing.Do(func() {
		close(s.quit)
		s.poke()
		<-s.done
		s.mu.Lock()
		if s.wake >= 0 {
			unix.Close(s.wake)
			s.wake = -1
		}
		s.mu.Unlock()
	})
	<-s.done
}

func (s *sampler) run() {
	defer close(s.done)
	// A sample late by a few milliseconds, on a busy node, misplaces the
	// state changes around it by half the delay. So the sampling thread
	// sleeps in the kernel, not on a Go timer, which another thread
	// would have to notice first, and runs ahead of the others. Its work
	// is bounded (maxPerTick reads of microseconds a tick), so it cannot
	// starve the node. Without CAP_SYS_NICE it keeps the default
	// priority.
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), samplerNice)
	// The thread ends with run, locked: its CPU time is read before.
	cpu0 := threadCPU()
	defer func() { s.cpu = threadCPU() - cpu0 }()
	for {
		select {
		case <-s.quit:
			return
		default:
		}
		s.mu.Lock()
		idle := len(s.calls) == 0
		s.mu.Unlock()
		// Idle, it waits for an announcement, not for ticks. A call
		// announced during a sleep ends it: a first sample at once,
		// whose state stands for the time since the call's start.
		var timeout *unix.Timespec
		if !idle {
			// Goroutines left over by maxPerTick wait one interval:
			// the cost per interval stays bounded.
			wait := cmp.Or(s.tick(), s.every)
			ts := unix.NsecToTimespec(wait.Nanoseconds())
			timeout = &ts
		} else if s.wake < 0 {
			ts := unix.NsecToTimespec(s.every.Nanoseconds())
			timeout = &ts
		}
		fds := []unix.PollFd{{Fd: int32(s.wake), Events: unix.POLLIN}}
		if n, _ := unix.Ppoll(fds, timeout, nil); n > 0 {
			var b [8]byte
			unix.Read(s.wake, b[:])
		}
	}
}

// threadCPU is the CPU time of the calling thread so far.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// A gkey names one goroutine of one process.
type gkey struct {
	pid int
	g   uint64
}

// interval is how long after now the goroutine of a call that started at
// start is due for its next sample.
func (s *sampler) interval(start, now uint64) uint64 {
	var elapsed uint64
	if now > start {
		elapsed = now - start
	}
	return min(max(elapsed/samplesPerElapsed, uint64(s.every)), uint64(max(maxEvery, s.every)))
}

// tick samples up to maxPerTick of the goroutines due for a sample, and
// credits the state of each to every call in flight on it. It returns how
// long until the next goroutine is due.
func (s *sampler) tick() time.Duration {
	now, err := monotonic()
	if err != nil {
		return s.every
	}
	s.mu.Lock()
	byG := map[gkey][]uint64{}
	var order []gkey
	wait := uint64(max(maxEvery, s.every))
	for id, c := range s.calls {
		if c.next > now {
			wait = min(wait, c.next-now)
		}
		k := gkey{c.pid, c.g}
		if _, ok := byG[k]; !ok {
			order = append(order, k)
		}
		byG[k] = append(byG[k], id)
	}
	// Due: a goroutine with a call due.
	due := order[:0]
	for _, k := range order {
		for _, id := range byG[k] {
			if s.calls[id].next <= now {
				due = append(due, k)
				break
			}
		}
	}
	start := s.next
	s.next += maxPerTick
	s.mu.Unlock()

	n := min(len(due), maxPerTick)
	if len(due) > n {
		// Some are left for the next tick, at once.
		wait = 0
	}
	for i := range n {
		k := due[(start+i)%len(due)]
		st, place, err := s.read(k)
		s.samples.Add(1)
		if err != nil {
			continue
		}
		now, err := monotonic()
		if err != nil {
			continue
		}
		state := stateOf(st)
		s.mu.Lock()
		for _, id := range byG[k] {
			// Gone since the snapshot: its call returned.
			c, ok := s.calls[id]
			if !ok || now < c.last {
				continue
			}
			if st.Status == goroutine.Dead || c.goid != 0 && st.Goid != c.goid {
				// Its goroutine ended, and the call's record was
				// lost (ring buffer full) or will say so: sampling
				// the g's next goroutine would be wrong.
				delete(s.calls, id)
				continue
			}
			c.t.Samples++
			if place == nil && state != "cpu" && state == c.lastState {
				// The walk failed (the goroutine moved meanwhile),
				// or found nothing: still waiting, still there.
				place = c.lastPlace
			}
			d := time.Duration(now - c.last)
			c.t.MaxGap = max(c.t.MaxGap, d)
			if c.t.Samples > 1 && (state != c.lastState || !samePlace(place, c.lastPlace)) {
				// It changed somewhere between the two samples: half
				// the time to each, which errs by half the gap at most.
				add(&c.t, c.lastState, c.lastPlace, d/2)
				d -= d / 2
			}
			add(&c.t, state, place, d)
			c.last, c.lastState, c.lastPlace = now, state, place
			c.next = now + s.interval(c.start, now)
			wait = min(wait, c.next-now)
		}
		s.mu.Unlock()
	}
	return time.Duration(wait)
}

// read reads goroutine k's state, and where it waits if it does.
func (s *sampler) read(k gkey) (goroutine.State, *calls.Place, error) {
	r, err := s.reader(k.pid)
	if err != nil {
		return goroutine.State{}, nil, err
	}
	st, err := r.Read(k.g)
	if err != nil {
		return st, nil, err
	}
	// Runnable too: woken from a wait, it is still where it waited until
	// it gets a thread, which on a busy node is part of the wait's cost.
	if st.Status == goroutine.Running {
		return st, nil, nil
	}
	frames, err := r.Where(st, maxWhere)
	if err != nil {
		return st, nil, nil
	}
	for _, f := range frames {
		if !wrapsWaits(f.Func) {
			return st, &calls.Place{Func: f.Func, File: f.File, Line: f.Line}, nil
		}
	}
	return st, nil, nil
}

// maxWhere is how many frames of a waiting goroutine are read to find
// where it waits.
const maxWhere = 8

// wrapsWaits says fn only wraps system calls and waits: where a goroutine
// waits is its caller, which chose to. cilium/ebpf's own wrappers are
// among them: in cilium-agent, the caller of sys.BPF names the command
// (sys.ProgLoad is BPF_PROG_LOAD, the verifier's time).
func wrapsWaits(fn string) bool {
	for _, p := range []string{"syscall.", "internal/poll.", "golang.org/x/sys/unix.", "os.", "internal/syscall/", "github.com/cilium/ebpf/internal/unix."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return fn == "github.com/cilium/ebpf/internal/sys.BPF"
}

// reader returns the reader of process pid's goroutines.
func (s *sampler) reader(pid int) (*goroutine.Reader, error) {
	s.mu.Lock()
	r, ok := s.readers[pid]
	s.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := goroutine.NewReader(pid, s.file, s.offsets)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.readers[pid] = r
	s.mu.Unlock()
	return r, nil
}

// stateOf names what a goroutine in state st does, as a Breakdown does:
// "cpu", "runnable", "syscall", or why it is parked.
func stateOf(st goroutine.State) string {
	switch st.Status {
	case goroutine.Running:
		return "cpu"
	case goroutine.Syscall:
		return "syscall"
	case goroutine.Waiting:
		return st.WaitReason.Category.String()
	}
	// Runnable or preempted, or the runtime working on it (copying its
	// stack): waiting for a thread either way.
	return "runnable"
}

func samePlace(a, b *calls.Place) bool {
	return a == b || a != nil && b != nil && *a == *b
}

// add counts d spent in state, at place if it waited somewhere.
func add(t *calls.Tally, state string, place *calls.Place, d time.Duration) {
	switch state {
	case "cpu":
		t.CPU += d
	case "runnable":
		t.Runnable += d
	case "syscall":
		t.Syscall += d
	default:
		if t.Blocked == nil {
			t.Blocked = map[string]time.Duration{}
		}
		t.Blocked[state] += d
	}
	if place != nil {
		if t.Where == nil {
			t.Where = map[calls.Place]time.Duration{}
		}
		p := *place
		p.State = state
		t.Where[p] += d
	}
}

// monotonic reads CLOCK_MONOTONIC, the clock of the probes' timestamps.
func monotonic() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return uint64(ts.Nano()), nil
}
