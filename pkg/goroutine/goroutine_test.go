package goroutine

import (
	"bufio"
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// A parked is a running testdata/parked.
type parked struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// gs holds what each goroutine said of itself, by name.
	gs map[string]reported
}

type reported struct {
	g, goid, local uint64
}

// startParked runs b and reads what its goroutines report; the process
// exits when the test ends.
// A build for the other architecture runs under qemu-user.
func startParked(t testing.TB, b *build) *parked {
	t.Helper()
	cmd := exec.Command(b.Path)
	if b.GOARCH != runtime.GOARCH {
		qemu := qemuUser[b.GOARCH]
		path, err := exec.LookPath(qemu)
		if err != nil {
			t.Fatalf("%s runs the %s builds (Debian package qemu-user): %v", qemu, b.GOARCH, err)
		}
		cmd = exec.Command(path, b.Path)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &parked{cmd: cmd, stdin: stdin, gs: map[string]reported{}}
	t.Cleanup(p.stop)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "ready" {
			return p
		}
		var name string
		var r reported
		if _, err := fmt.Sscanf(sc.Text(), "%s g=%v goid=%d local=%v", &name, &r.g, &r.goid, &r.local); err != nil {
			t.Fatalf("%s: %q: %v", b, sc.Text(), err)
		}
		p.gs[name] = r
	}
	t.Fatalf("%s: exited before it was ready: %v", b, sc.Err())
	return nil
}

var qemuUser = map[string]string{"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}

// newTestReader returns a Reader of p, a run of b.
func newTestReader(t testing.TB, b *build, p *parked) *Reader {
	t.Helper()
	f, err := symbols.Open(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if b.GOARCH == runtime.GOARCH {
		r, err := NewReader(p.cmd.Process.Pid, f, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// qemu-user maps a 64-bit guest at the addresses it asks for (guest
	// base 0), so the guest's addresses are the process's; but it maps
	// the guest's code without execute permission, where procmaps looks
	// for it. A fixed-address build has no bias.
	if b.PIE {
		t.Fatalf("%s: a PIE under qemu-user", b)
	}
	r, err := newReader(p.cmd.Process.Pid, f, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// stop closes the process's stdin, on which it exits, and waits for it.
func (p *parked) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// parksAt returns the line of testdata/parked/main.go marked "// parks:
// name".
func parksAt(t testing.TB, name string) int {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(parkedSource(), "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(src), "\n") {
		if strings.HasSuffix(line, "// parks: "+name) {
			return i + 1
		}
	}
	t.Fatalf("no line parks %s", name)
	return 0
}

// A parking is what testdata/parked's goroutine of that name does.
type parking struct {
	name   string
	status Status
	reason string   // the wait reason, Go 1.20+
	before string   // the wait reason before Go 1.20, which has no sync reasons
	cat    Category // the category of reason
	fn     string   // the function that parks
	// direct: fn is the first frame outside the runtime and sync, no
	// other library's function between.
	direct bool
}

var parkings = []parking{
	{"mutex", Waiting, "sync.Mutex.Lock", "semacquire", Mutex, "main.waitOnMutex", true},
	{"rlock", Waiting, "sync.RWMutex.RLock", "semacquire", RWMutex, "main.waitOnRLock", true},
	{"wlock", Waiting, "sync.RWMutex.Lock", "semacquire", RWMutex, "main.waitOnLock", true},
	{"recv", Waiting, "chan receive", "", ChanReceive, "main.waitOnReceive", true},
	{"send", Waiting, "chan send", "", ChanSend, "main.waitOnSend", true},
	{"select", Waiting, "select", "", Select, "main.waitOnSelect", true},
	{"sleep", Waiting, "sleep", "", Sleep, "main.sleepLong", false},
	{"cond", Waiting, "sync.Cond.Wait", "", Cond, "main.waitOnCond", true},
	{"iowait", Waiting, "IO wait", "", IOWait, "main.readPolled", false},
	{"syscall", Syscall, "", "", Other, "main.readPipe", false},
}

// patience bounds how long a test waits for a goroutine to reach the
// state it is on its way to: it fails past it, it never passes by it.
const patience = 20 * time.Second

// Every goroutine of testdata/parked reads as what it does, with the
// goroutine ID and stack the runtime gave it, and Where names the line it
// parks on: for every Go release of the tables but 1.19, stripped and not,
// PIE and not, amd64 and arm64 (the host's architecture natively, the
// other under qemu-user).
func TestRead(t *testing.T) {
	for _, b := range allBuilds(t) {
		t.Run(b.String(), func(t *testing.T) {
			p := startParked(t, b)
			r := newTestReader(t, b, p)
			for _, pk := range parkings {
				checkParked(t, b, r, p, pk)
			}
			checkSpinning(t, r, p.gs["spin"])
			checkExited(t, r, p.gs["exited"])
		})
	}
}

// read reads the goroutine rep reported until done says it is in the state
// wanted.
func read(t *testing.T, r *Reader, name string, rep reported, done func(State) bool) State {
	t.Helper()
	var s State
	var err error
	for deadline := time.Now().Add(patience); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s, err = r.Read(rep.g); err != nil {
			t.Fatalf("%s: Read(%#x): %v", name, rep.g, err)
		}
		if done(s) {
			return s
		}
	}
	t.Fatalf("%s: still %+v after %v", name, s, patience)
	return s
}

func checkParked(t *testing.T, b *build, r *Reader, p *parked, pk parking) {
	rep, ok := p.gs[pk.name]
	if !ok {
		t.Fatalf("no goroutine %s", pk.name)
	}
	reason, cat := pk.reason, pk.cat
	if pk.before != "" && b.goMinor(t) < 20 {
		reason, cat = pk.before, Other
	}
	s := read(t, r, pk.name, rep, func(s State) bool { return s.Status == pk.status && !s.Scan })
	if s.G != rep.g || s.Goid != rep.goid {
		t.Errorf("%s: g %#x goid %d, the goroutine says g %#x goid %d", pk.name, s.G, s.Goid, rep.g, rep.goid)
	}
	if s.WaitReason != (WaitReason{reason, cat}) {
		t.Errorf("%s: wait reason %+v, want %q (%v)", pk.name, s.WaitReason, reason, cat)
	}
	if !(s.StackLo <= rep.local && rep.local < s.StackHi) || !(s.StackLo <= s.SP && s.SP < s.StackHi) {
		t.Errorf("%s: stack [%#x, %#x) holds neither the goroutine's local at %#x nor SP %#x", pk.name, s.StackLo, s.StackHi, rep.local, s.SP)
	}
	if (s.M != 0) != (pk.status == Syscall) {
		t.Errorf("%s: %v on M %#x", pk.name, s.Status, s.M)
	}

	frames, err := r.Where(s, 8)
	if err != nil {
		t.Fatalf("%s: Where: %v", pk.name, err)
	}
	i := 0
	for i < len(frames) && !strings.HasPrefix(frames[i].Func, "main.") {
		i++
	}
	t.Logf("%s: %v %+v where %s", pk.name, s.Status, s.WaitReason, format(frames))
	line := parksAt(t, pk.name)
	switch {
	case i == len(frames):
		t.Errorf("%s: Where = %s: no frame of the program", pk.name, format(frames))
	case frames[i].Func != pk.fn || frames[i].Line != line || filepath.Base(frames[i].File) != "main.go":
		t.Errorf("%s: Where = %s, want %s at main.go:%d", pk.name, format(frames), pk.fn, line)
	case pk.direct && i != 0:
		t.Errorf("%s: Where = %s, want %s first", pk.name, format(frames), pk.fn)
	case runtimeOrSync(frames[0].Func):
		t.Errorf("%s: Where = %s starts in the runtime or sync", pk.name, format(frames))
	}
	if one, err := r.Where(s, 1); err != nil || len(one) != 1 || one[0] != frames[0] {
		t.Errorf("%s: Where(1) = %s, %v; Where(8) starts with %s", pk.name, format(one), err, format(frames[:1]))
	}
}

func format(frames []symbols.Frame) string {
	var b strings.Builder
	for i, f := range frames {
		if i > 0 {
			b.WriteString(" < ")
		}
		fmt.Fprintf(&b, "%s %s:%d", f.Func, filepath.Base(f.File), f.Line)
	}
	return "[" + b.String() + "]"
}

// The spinning goroutine reads as running on a thread at some point (it is
// runnable when preempted), and Where refuses it.
func checkSpinning(t *testing.T, r *Reader, rep reported) {
	s := read(t, r, "spin", rep, func(s State) bool {
		if s.Status != Running && s.Status != Runnable && s.Status != Preempted {
			t.Fatalf("spin: %+v", s)
		}
		return s.Status == Running
	})
	if s.M == 0 || s.Goid != rep.goid {
		t.Errorf("spin: running on M %#x, goid %d; the goroutine says goid %d", s.M, s.Goid, rep.goid)
	}
	if _, err := r.Where(s, 8); !errors.Is(err, ErrNotParked) {
		t.Errorf("spin: Where of a running goroutine: %v, want ErrNotParked", err)
	}
}

// The goroutine that returned reads as dead, unless its g went to a new
// goroutine; Where refuses it.
func checkExited(t *testing.T, r *Reader, rep reported) {
	s := read(t, r, "exited", rep, func(s State) bool { return s.Status == Dead || s.Goid != rep.goid })
	if s.Status != Dead {
		return
	}
	if _, err := r.Where(s, 8); !errors.Is(err, ErrNotParked) {
		t.Errorf("exited: Where of a dead goroutine: %v, want ErrNotParked", err)
	}
}

// An address the process does not map, or a process that has exited, is an
// error.
func TestReadErrors(t *testing.T) {
	b := allBuilds(t)[0]
	p := startParked(t, b)
	r := newTestReader(t, b, p)
	// Nothing is mapped below mmap_min_addr, nor at non-canonical addresses.
	for _, addr := range []uint64{0, 8, 0x1000, 1 << 63} {
		if s, err := r.Read(addr); !errors.Is(err, syscall.EFAULT) {
			t.Errorf("Read(%#x) = %+v, %v; want EFAULT", addr, s, err)
		}
	}
	// Where reads the stack the state names, which may be gone.
	s := read(t, r, "mutex", p.gs["mutex"], func(s State) bool { return s.Status == Waiting })
	gone := s
	gone.StackLo, gone.StackHi, gone.BP = 0x1000, 0x3000, 0x2000
	if _, err := r.Where(gone, 8); !errors.Is(err, syscall.EFAULT) {
		t.Errorf("Where with an unmapped stack: %v, want EFAULT", err)
	}
	p.stop()
	if s, err := r.Read(p.gs["mutex"].g); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Read after the process exited = %+v, %v; want ESRCH", s, err)
	}
	if _, err := r.Where(s, 8); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Where after the process exited: %v, want ESRCH", err)
	}
}

// The Status constants are the runtime's _G constants in every release,
// as DWARF describes them.
func TestStatusValues(t *testing.T) {
	want := map[string]Status{
		"_Gidle": Idle, "_Grunnable": Runnable, "_Grunning": Running, "_Gsyscall": Syscall,
		"_Gwaiting": Waiting, "_Gdead": Dead, "_Gcopystack": CopyStack, "_Gpreempted": Preempted,
		"_Gleaked": Leaked, "_Gdeadextra": DeadExtra,
	}
	for _, b := range allBuilds(t) {
		if b.Stripped {
			continue
		}
		consts := dwarfConstants(t, b.Path, "runtime._G")
		for name, v := range consts {
			name = strings.TrimPrefix(name, "runtime.")
			switch s, ok := want[name]; {
			case name == "_Gscan":
				if v != gScan {
					t.Errorf("%s: _Gscan = %#x, want %#x", b, v, gScan)
				}
			case ok && int64(s) != v:
				t.Errorf("%s: %s = %d, Status %v is %d", b, name, v, s, s)
			case ok && s.String() == "unknown":
				t.Errorf("%s: %s has no name", b, name)
			case !ok && !strings.HasPrefix(name, "_Gscan") && !strings.HasSuffix(name, "_unused") && !strings.HasPrefix(name, "_GC") && name != "_GoidCacheBatch":
				t.Errorf("%s: runtime has status %s = %d, which Status lacks", b, name, v)
			}
		}
		for _, name := range []string{"_Grunning", "_Gwaiting", "_Gsyscall", "_Gdead"} {
			if _, ok := consts["runtime."+name]; !ok {
				t.Fatalf("%s: no %s in DWARF", b, name)
			}
		}
	}
}

// dwarfConstants returns the constants of the executable at path whose names
// start with prefix: the Go compiler describes every package's constants.
func dwarfConstants(t *testing.T, path, prefix string) map[string]int64 {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	d, err := ef.DWARF()
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]int64{}
	for r := d.Reader(); ; {
		e, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if e == nil {
			return consts
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if v, ok := e.Val(dwarf.AttrConstValue).(int64); e.Tag == dwarf.TagConstant && ok && strings.HasPrefix(name, prefix) {
			consts[name] = v
		}
	}
}

// Every wait reason the categories name is one of some Go release: a typo
// would leave its category unused.
func TestCategories(t *testing.T) {
	known := map[string]bool{}
	for _, b := range allBuilds(t) {
		f, err := symbols.Open(b.Path)
		if err != nil {
			t.Fatal(err)
		}
		names, err := offsets.WaitReasons(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		for _, n := range names {
			known[n] = true
		}
	}
	for name, c := range categories {
		if !known[name] {
			t.Errorf("category %v names wait reason %q, which no release has", c, name)
		}
	}
	for c := Other; c <= Cond; c++ {
		if c.String() == "unknown" {
			t.Errorf("category %d has no name", c)
		}
	}
}

// The cost of one sample of a parked goroutine: Read, and Read then Where
// of its first frame. Besides the wall time, which a busy machine inflates,
// each reports the process's CPU time per sample (cpu-ns/op).
func BenchmarkRead(b *testing.B) {
	r, rep := benchReader(b)
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := r.Read(rep.g); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadWhere(b *testing.B) {
	r, rep := benchReader(b)
	defer reportCPU(b)()
	for b.Loop() {
		s, err := r.Read(rep.g)
		if err != nil {
			b.Fatal(err)
		}
		if fr, err := r.Where(s, 1); err != nil || len(fr) != 1 {
			b.Fatal(fr, err)
		}
	}
}

// reportCPU starts counting the process's CPU time; the function it returns
// reports it per iteration.
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op")
	}
}

func benchReader(b testing.TB) (*Reader, reported) {
	bd := allBuilds(b)[0]
	p := startParked(b, bd)
	r := newTestReader(b, bd, p)
	rep := p.gs["mutex"]
	for deadline := time.Now().Add(patience); ; time.Sleep(time.Millisecond) {
		s, err := r.Read(rep.g)
		if err != nil {
			b.Fatal(err)
		}
		if s.Status == Waiting {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("mutex: %+v", s)
		}
	}
	return r, rep
}
