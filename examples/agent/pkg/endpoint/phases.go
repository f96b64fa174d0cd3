package endpoint

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/cilium/pkg/groundtruth"
)

// PhasedName is the function whose time goes, in known amounts, to known
// states: the ground truth of a breakdown of where a call's time went.
const PhasedName = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regeneratePhased"

// phasedCalls is registered at the first phased call: the reports of
// agents that make none do not list it.
var (
	phasedOnce  sync.Once
	phasedCalls *groundtruth.Counter
)

// Phases are how long each part of regeneratePhased takes.
type Phases struct {
	CPU     time.Duration // computing
	Mutex   time.Duration // waiting for the endpoint's lock, which another goroutine holds
	Chan    time.Duration // waiting on a channel
	Syscall time.Duration // blocked in read(2) on a pipe
	// SyscallMin, ExecMin and BPFMin are the least the read, the child
	// and the program load can have lasted by the agent's own measure:
	// from when /proc showed the reader blocked in the read to the write
	// that ended it; the time the child computed for by its own clock;
	// the verification time the kernel reports for the program. The
	// phases' times are upper bounds: they also count a wait for a P
	// after the syscall (and, for the read, a wait to enter it), these
	// do not.
	SyscallMin, ExecMin, BPFMin time.Duration
	// Exec is how long the child process this agent's executable runs as
	// (see ChildFlag) computes; as measured, from the start of starting
	// it to the end of waiting for it. 0: no child.
	Exec time.Duration
	// BPF is how long loading a BPF program of BPFInsns instructions
	// through bpf(BPF_PROG_LOAD) took. No program without BPFInsns.
	BPF      time.Duration
	BPFInsns int
	// Netlink: then dump the links over NETLINK_ROUTE, as cilium-agent
	// reads and writes its devices and routes, and count the messages
	// sent and the reads.
	Netlink                    bool
	NetlinkSends, NetlinkRecvs int
	// Detach: last, start a child process (this executable) that computes
	// this long and return without waiting for it, as a helper started
	// and left running. 0: none. DetachPID is its PID, DetachStart when
	// starting it began, Returned when the call returned; whoever called
	// RegeneratePhased reaps it (Reap).
	Detach      time.Duration
	DetachPID   int
	DetachStart time.Time
	Returned    time.Time
}

func (p Phases) String() string {
	return fmt.Sprintf("cpu_ns=%d mutex_ns=%d chan_ns=%d syscall_ns=%d syscall_min_ns=%d exec_ns=%d exec_min_ns=%d bpf_ns=%d bpf_min_ns=%d",
		p.CPU.Nanoseconds(), p.Mutex.Nanoseconds(), p.Chan.Nanoseconds(), p.Syscall.Nanoseconds(), p.SyscallMin.Nanoseconds(),
		p.Exec.Nanoseconds(), p.ExecMin.Nanoseconds(), p.BPF.Nanoseconds(), p.BPFMin.Nanoseconds())
}

// ChildFlag makes the agent a child process of regeneratePhased: it
// computes for the duration that follows, then exits.
const ChildFlag = "-phased-child"

// Child computes for d: the whole life of a child process but its start
// and exit.
func Child(d time.Duration) {
	spin(d)
}

// RegeneratePhased runs one phased regeneration and returns what each
// phase took, as the agent measured it.
func (e *Endpoint) RegeneratePhased(want Phases) Phases {
	phasedOnce.Do(func() { phasedCalls = groundtruth.New(PhasedName) })
	seq := groundtruth.Next()
	took := e.regeneratePhased(seq, want)
	took.Returned = time.Now()
	groundtruth.Returned(seq)
	return took
}

// regeneratePhased spends want.CPU computing, then waits want.Mutex for
// the endpoint's lock (lockAlive), want.Chan on a channel
// (waitForProxyCompletions) and want.Syscall in a read(2) of a pipe
// (readPipe). It reads the monotonic clock at its top and after each phase,
// so the phases it reports cover the whole call: what it does besides
// waiting (starting the goroutines that end the waits, which may take a
// new thread) counts as computing, as it is.
//
//go:noinline
func (e *Endpoint) regeneratePhased(seq uint64, want Phases) (took Phases) {
	phasedCalls.Start(seq)
	defer phasedCalls.Stop(seq)
	t0 := time.Now()

	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		panic(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	// Each helper ends its wait want.X after the phase before it ends.
	cpuDone, mutexDone, chanDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	held, proxies := make(chan struct{}), make(chan struct{})
	go func() {
		e.mutex.Lock()
		close(held)
		<-cpuDone
		time.Sleep(want.Mutex)
		e.mutex.Unlock()
	}()
	go func() {
		<-mutexDone
		time.Sleep(want.Chan)
		close(proxies)
	}()
	var blocked, written atomic.Int64 // since t0
	go func() {
		<-chanDone
		// The reader may reach read(2) milliseconds after its phase
		// starts, on a busy node: the read lasts at least from when it
		// is seen blocked in it.
		blockedInRead(fds[0])
		blocked.Store(int64(time.Since(t0)))
		time.Sleep(want.Syscall)
		written.Store(int64(time.Since(t0)))
		syscall.Write(fds[1], []byte{1})
	}()
	<-held

	spin(want.CPU - time.Since(t0))
	close(cpuDone)
	t1 := time.Now()
	e.lockAlive()
	e.mutex.Unlock()
	close(mutexDone)
	t2 := time.Now()
	e.waitForProxyCompletions(proxies)
	close(chanDone)
	t3 := time.Now()
	e.readPipe(fds[0])
	t4 := time.Now()
	// The read was blocked before blocked and returned after the write.
	took = Phases{CPU: t1.Sub(t0), Mutex: t2.Sub(t1), Chan: t3.Sub(t2), Syscall: t4.Sub(t3), SyscallMin: time.Duration(written.Load() - blocked.Load())}
	if want.Exec > 0 {
		took.Exec, took.ExecMin = e.runChild(want.Exec)
	}
	if want.BPFInsns > 0 {
		took.BPF, took.BPFMin = e.loadProgram(want.BPFInsns)
	}
	if want.Netlink {
		took.NetlinkSends, took.NetlinkRecvs = e.dumpLinks()
	}
	if want.Detach > 0 {
		took.DetachStart = time.Now()
		took.DetachPID = e.startChild(want.Detach)
	}
	return took
}

// runChild runs this executable as a child process that computes for d,
// clone, execve and wait4 as a datapath compilation's, and returns how long
// it took from the start of starting it to the end of waiting for it, and
// the least it can have taken: d, which the child computed for.
//
//go:noinline
func (e *Endpoint) runChild(d time.Duration) (took, least time.Duration) {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	var (
		ws   syscall.WaitStatus
		werr error
	)
	realtime(func() {
		t0 := time.Now()
		pid, err := syscall.ForkExec(self, []string{self, ChildFlag, d.String()}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
		if err != nil {
			panic(fmt.Sprintf("child process: %v", err))
		}
		for err = syscall.EINTR; err == syscall.EINTR; {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
		}
		took = time.Since(t0)
		werr = err
	})
	if werr != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		panic(fmt.Sprintf("child process: wait4: %v, status %v", werr, ws))
	}
	// The child computed for d by its own clock before it exited.
	return took, d
}

// startChild starts this executable as a child process that computes for
// d and returns its PID, without waiting for it.
//
//go:noinline
func (e *Endpoint) startChild(d time.Duration) int {
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	pid, err := syscall.ForkExec(self, []string{self, ChildFlag, d.String()}, &syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		panic(fmt.Sprintf("child process: %v", err))
	}
	return pid
}

// Reap waits for child process pid, which Phases.Detach started, to exit.
func Reap(pid int) {
	var (
		ws  syscall.WaitStatus
		err error = syscall.EINTR
	)
	for err == syscall.EINTR {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
	}
	if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
		panic(fmt.Sprintf("child process %d: wait4: %v, status %v", pid, err, ws))
	}
}

// loadProgram loads a socket filter of n instructions through
// bpf(BPF_PROG_LOAD), as cilium-agent loads its datapath, and returns how
// long the syscall took, and the least it can have taken: the time the
// kernel says it spent verifying the program (BPF_LOG_STATS), inside the
// syscall. Raw, without a library: the agent has no dependencies.
//
//go:noinline
func (e *Endpoint) loadProgram(n int) (took, least time.Duration) {
	insns := make([]uint64, n)
	for i := range insns[:n-1] {
		insns[i] = 0xb7 // r0 = 0
	}
	insns[n-1] = 0x95 // exit
	license := []byte("GPL\x00")
	// The kernel writes the log through a uintptr, which a goroutine
	// stack moved meanwhile would leave stale: a buffer off the stack.
	loadMu.Lock()
	defer loadMu.Unlock()
	log := verifierLog[:]
	const logStats = 4 // BPF_LOG_STATS: the verifier's totals, its time among them
	attr := struct {
		progType, insnCnt uint32
		insns, license    uint64
		logLevel, logSize uint32
		logBuf            uint64
		kernVersion       uint32
		progFlags         uint32
	}{
		progType: 1, // BPF_PROG_TYPE_SOCKET_FILTER
		insnCnt:  uint32(n),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: logStats,
		logSize:  uint32(len(log)),
		logBuf:   uint64(uintptr(unsafe.Pointer(&log[0]))),
	}
	// Before Linux 5.11, BPF memory counts against RLIMIT_MEMLOCK, as
	// cilium-agent knows: it lifts the limit at start.
	syscall.Setrlimit(rlimitMemlock, &syscall.Rlimit{Cur: ^uint64(0), Max: ^uint64(0)})
	const bpfProgLoad = 5
	var (
		fd    uintptr
		errno syscall.Errno
	)
	realtime(func() {
		t0 := time.Now()
		// A signal aborts the verifier with EAGAIN (the runtime's
		// preemption signal reaches threads in system calls too): load
		// again, as cilium/ebpf does for cilium-agent.
		for attempt := 0; attempt < 10; attempt++ {
			fd, _, errno = syscall.Syscall(sysBPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
			if errno != syscall.EAGAIN {
				break
			}
		}
		took = time.Since(t0)
	})
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		panic(fmt.Sprintf("bpf(BPF_PROG_LOAD) of %d instructions: %v", n, errno))
	}
	syscall.Close(int(fd))
	_, stats, _ := strings.Cut(string(log), "verification time ")
	var us int64
	if _, err := fmt.Sscanf(stats, "%d usec", &us); err != nil {
		panic(fmt.Sprintf("bpf(BPF_PROG_LOAD): no verification time in the verifier's log %q", log))
	}
	return took, time.Duration(us) * time.Microsecond
}

var (
	loadMu      sync.Mutex
	verifierLog [1024]byte // loadProgram's, under loadMu
)

// rlimitMemlock is RLIMIT_MEMLOCK, which package syscall does not
// name; the same on amd64 and arm64.
const rlimitMemlock = 8

// realtime runs f, which times a slow system call, on a thread of its own
// at real-time priority where the agent may (as root). After milliseconds
// in the kernel, on a busy node, a thread at normal priority is
// rescheduled on its way out and waits for a CPU, and then maybe for a P:
// milliseconds the agent's clock would count as the syscall's, which the
// tracer, at the syscall's exit, does not.
func realtime(f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const schedOther, schedFIFO = 0, 1
	prio := int32(1)
	if _, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedFIFO, uintptr(unsafe.Pointer(&prio))); errno == 0 {
		normal := int32(0)
		defer syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedOther, uintptr(unsafe.Pointer(&normal)))
	}
	f()
}

// spin computes for d.
//
//go:noinline
func spin(d time.Duration) {
	x := uint64(1)
	for start := time.Now(); time.Since(start) < d; {
		for i := 0; i < 1000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink = x
}

var sink uint64

// lockAlive takes the endpoint's lock.
//
//go:noinline
func (e *Endpoint) lockAlive() {
	e.mutex.Lock()
}

// waitForProxyCompletions waits until done is closed.
//
//go:noinline
func (e *Endpoint) waitForProxyCompletions(done <-chan struct{}) {
	<-done
}

// readPipe blocks in read(2) on fd, a blocking pipe, until a byte comes:
// syscall.Read is no netpoller wait.
//
//go:noinline
func (e *Endpoint) readPipe(fd int) {
	var b [1]byte
	for {
		if _, err := syscall.Read(fd, b[:]); err != syscall.EINTR {
			return
		}
	}
}

// dumpLinks asks the kernel for every network link over a netlink socket,
// reads the answer to its end, and returns how many messages it sent and
// how many reads it took.
//
//go:noinline
func (e *Endpoint) dumpLinks() (sends, recvs int) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		panic(fmt.Sprintf("netlink socket: %v", err))
	}
	defer syscall.Close(fd)
	req := make([]byte, syscall.NLMSG_HDRLEN+syscall.SizeofRtGenmsg)
	*(*syscall.NlMsghdr)(unsafe.Pointer(&req[0])) = syscall.NlMsghdr{
		Len: uint32(len(req)), Type: syscall.RTM_GETLINK, Flags: syscall.NLM_F_DUMP | syscall.NLM_F_REQUEST, Seq: 1,
	}
	req[syscall.NLMSG_HDRLEN] = syscall.AF_UNSPEC
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		panic(fmt.Sprintf("netlink send: %v", err))
	}
	sends = 1
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		recvs++
		if err != nil {
			panic(fmt.Sprintf("netlink receive: %v", err))
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			panic(fmt.Sprintf("netlink message: %v", err))
		}
		for _, m := range msgs {
			if m.Header.Type == syscall.NLMSG_DONE || m.Header.Type == syscall.NLMSG_ERROR {
				return sends, recvs
			}
		}
	}
}

// blockedInRead waits until a thread of this process is blocked in
// read(2) of fd, as /proc/self/task/*/syscall shows a blocked thread's
// system call and its arguments.
func blockedInRead(fd int) {
	want := fmt.Sprintf("%d 0x%x ", syscall.SYS_READ, fd)
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			panic(fmt.Sprintf("threads: %v", err))
		}
		for _, t := range tasks {
			// A thread that exited since the listing has no file.
			if b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/syscall"); err == nil && strings.HasPrefix(string(b), want) {
				return
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
}
