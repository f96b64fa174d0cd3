// Package testagent builds and runs the example agent (examples/agent) for
// tests and benchmarks: several Go toolchains, stripped or not, PIE or not.
package testagent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Variant is one way of building the agent.
type Variant struct {
	Toolchain string // GOTOOLCHAIN value, e.g. "go1.22.12"; empty: the current one
	Stripped  bool   // -ldflags=-s -w, as release cilium-agent images are built
	PIE       bool   // -buildmode=pie
	GOARCH    string // empty: the host's
}

func (v Variant) String() string {
	s := v.Toolchain
	if s == "" {
		s = runtime.Version()
	}
	if v.GOARCH != "" {
		s += "-" + v.GOARCH
	}
	if v.Stripped {
		s += "-stripped"
	}
	if v.PIE {
		s += "-pie"
	}
	return s
}

// Matrix is what the end-to-end tests run on.
var Matrix = func() []Variant {
	var vs []Variant
	for _, tc := range []string{"", "go1.22.12"} {
		for _, stripped := range []bool{false, true} {
			for _, pie := range []bool{false, true} {
				vs = append(vs, Variant{Toolchain: tc, Stripped: stripped, PIE: pie})
			}
		}
	}
	return vs
}()

// Root returns the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	mu    sync.Mutex
	dir   string
	built = map[Variant]string{}
)

// PrebuiltEnv names the directory of binaries built beforehand, for where
// no Go toolchain is: the kernel matrix's VMs (internal/kernels). When it
// is set, Build returns the agent at Prebuilt(dir, v), and the tracer's
// command tests run the tracer at dir/tracer.
const PrebuiltEnv = "TRACER_PREBUILT"

// Prebuilt returns where, in a directory of prebuilt binaries, the agent
// of variant v lies.
func Prebuilt(dir string, v Variant) string {
	return filepath.Join(dir, strings.ReplaceAll(v.String(), "/", "_"), "cilium-agent")
}

// Build builds the agent once per variant and test process, and returns the
// path of the binary. Cleanup removes the binaries.
func Build(tb testing.TB, v Variant) string {
	tb.Helper()
	if d := os.Getenv(PrebuiltEnv); d != "" {
		p := Prebuilt(d, v)
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s=%s: no agent %v: %v", PrebuiltEnv, d, v, err)
		}
		return p
	}
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[v]; ok {
		return p
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "testagent"); err != nil {
			tb.Fatal(err)
		}
	}
	out := Prebuilt(dir, v)
	args := []string{"build", "-o", out}
	if v.Stripped {
		args = append(args, "-ldflags=-s -w")
	}
	if v.PIE {
		args = append(args, "-buildmode=pie")
	}
	args = append(args, "./daemon")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join(Root(), "examples", "agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if v.Toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+v.Toolchain)
	}
	if v.GOARCH != "" {
		cmd.Env = append(cmd.Env, "GOARCH="+v.GOARCH)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build agent %v: %v\n%s", v, err, b)
	}
	built[v] = out
	return out
}

// Cleanup removes every binary Build made; call it from TestMain.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// Report is the agent's own count of its calls, printed on exit.
type Report struct {
	Counts   map[string]uint64 `json:"counts"`
	Panics   map[string]uint64 `json:"panics"`
	Checksum uint64            `json:"checksum"`
	// Durations holds, with -measure, the agent's own measurements of
	// each call of a Measured function that returned, by the sequence
	// number SeqCapture captures: in ns, the body's duration, from its
	// first statement to its last, then the call's as the caller saw it.
	Durations map[string]map[uint64][2]int64 `json:"durations_ns"`
	// LastSeq is, with -measure, the last sequence number the agent had
	// handed out when it took the report, and Running those of its calls
	// that had neither returned nor panicked by then: the workload goes on
	// while the report is taken, so the tracer may see them, and calls
	// numbered after LastSeq, return before the agent exits.
	LastSeq uint64   `json:"last_seq"`
	Running []uint64 `json:"running"`
}

// SeqCapture captures the sequence number every Measured function takes as
// its first argument after the receiver, as attribute "seq"; it needs no
// DWARF.
const SeqCapture = "seq=arg1:u64"

// Measured lists the functions the agent times itself with -measure.
var Measured = []string{ResolvePolicy, CompileAndLoad, Allocate}

// Tolerance is how much longer than the agent's own measurement of its body
// a traced call may last: the entry and RET probes' traps, tens of
// microseconds, lie outside the body's clock reads.
func Tolerance(body time.Duration) time.Duration {
	return time.Millisecond + body/20
}

// A Checked call is a traced duration set against the agent's own.
type Checked struct {
	Body, Call time.Duration // the agent's measurements
	// HeldUp is set when the caller saw the call last more than
	// Tolerance beyond the body: the thread was held up outside the body,
	// e.g. preempted on its way back from the entry probe's trap.
	HeldUp bool
	// Running is set when the call was still running when the agent
	// reported: it has no measurement to compare with.
	Running bool
}

// CheckDuration compares the duration the tracer saw for the call of fn
// the agent numbered seq (the captured attribute, in decimal) with the
// agent's own measurements of that call. The probes fire inside the call
// and outside the body, so the traced duration lies between the two; and
// it exceeds the body's by at most Tolerance, unless the agent saw the
// call itself held up outside the body. It fails when the agent measured
// no such call returning: it panicked, or the tracer paired the entry with
// another call's RET; unless the call was still running when the agent
// reported.
func (r Report) CheckDuration(fn, seq string, traced time.Duration) (Checked, error) {
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Checked{}, fmt.Errorf("%s: captured sequence number %q: %v", fn, seq, err)
	}
	d, ok := r.Durations[fn][n]
	if !ok {
		if r.LastSeq > 0 && (n > r.LastSeq || slices.Contains(r.Running, n)) {
			return Checked{Running: true}, nil
		}
		return Checked{}, fmt.Errorf("%s call %d: traced %v, but the agent measured no such call returning", fn, n, traced)
	}
	c := Checked{Body: time.Duration(d[0]), Call: time.Duration(d[1])}
	c.HeldUp = c.Call-c.Body > Tolerance(c.Body)
	switch {
	case traced < c.Body || traced > c.Call:
		return c, fmt.Errorf("%s call %d: traced %v, the agent measured its body %v and the call %v", fn, n, traced, c.Body, c.Call)
	case traced-c.Body > Tolerance(c.Body) && !c.HeldUp:
		return c, fmt.Errorf("%s call %d: traced %v, the agent measured %v (more than 1ms + 5%% apart)", fn, n, traced, c.Body)
	}
	return c, nil
}

// An Agent is a running example agent.
type Agent struct {
	Cmd  *exec.Cmd
	PID  int
	done chan struct{}

	mu    sync.Mutex
	lines []string
}

// Start runs the agent at path with args and waits until it is ready.
func Start(tb testing.TB, path string, args ...string) *Agent {
	tb.Helper()
	cmd := exec.Command(path, args...)
	return StartCmd(tb, cmd)
}

// StartCmd runs a prepared agent command and waits until it is ready.
func StartCmd(tb testing.TB, cmd *exec.Cmd) *Agent {
	tb.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	a := &Agent{Cmd: cmd, PID: cmd.Process.Pid, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(stdout)
		// With -measure the report holds every measured call.
		sc.Buffer(make([]byte, 1<<20), 1<<28)
		first := true
		for sc.Scan() {
			a.mu.Lock()
			a.lines = append(a.lines, sc.Text())
			a.mu.Unlock()
			if first && strings.HasPrefix(sc.Text(), "ready pid=") {
				first = false
				close(ready)
			}
		}
		cmd.Wait()
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			// A child that outlived the killed process holds its
			// stdout open.
			tb.Errorf("agent %d: output still open 10s after kill", a.PID)
		}
	})
	select {
	case <-ready:
	case <-a.done:
		tb.Fatalf("agent exited before it was ready: %q", a.Lines())
	case <-time.After(30 * time.Second):
		tb.Fatal("agent not ready after 30s")
	}
	return a
}

// Begin tells an agent started with -wait-start to start its workload.
func (a *Agent) Begin(tb testing.TB) {
	tb.Helper()
	if err := a.Cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		tb.Fatalf("start agent workload: %v", err)
	}
}

// Install copies the executable src to dst, replacing dst: a test that
// finds its agent by name, or restarts it from another build, runs a copy
// of its own.
func Install(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	os.Remove(dst) // a running copy keeps its inode
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		tb.Fatal(err)
	}
}

// PhaseBounds is the range a tracer's measure of phase part ("syscall",
// "exec" or "bpf") of a regeneratePhased call must fall in, given what the
// agent measured of that call (Phased): from the least the agent knows it
// lasted (part_min: from the reader seen blocked in the read to the write
// that ended it, the time the child computed for, the verifier's own time)
// to the agent's clock around it, each within 2 ms + 10%. The agent's
// clock also counts a wait for a P after the syscall, which the syscall
// does not: on arm64 under qemu's TCG, 41.8 ms around a program load of
// 30.0 ms; on a preemptible 6.1, 91.4 ms around a child of 60.0 ms. And a
// wait before it: on 6.12 under TCG, a read entered 5.8 ms after its
// phase began.
func PhaseBounds(w map[string]time.Duration, part string) (lo, hi time.Duration) {
	tol := func(d time.Duration) time.Duration { return 2*time.Millisecond + d/10 }
	least := min(w[part], w[part+"_min"])
	return least - tol(least), w[part] + tol(w[part])
}

// Phased returns what each phase of each regeneratePhased call took, as
// the agent measured it (its "phased cpu_ns=... mutex_ns=..." lines), by
// phase name ("cpu", "mutex", "chan", "syscall", "syscall_min", "exec", "exec_min", "bpf", "bpf_min"), in the
// order of the calls.
func (a *Agent) Phased(tb testing.TB) []map[string]time.Duration {
	tb.Helper()
	var out []map[string]time.Duration
	for _, l := range a.Lines() {
		rest, ok := strings.CutPrefix(l, "phased ")
		if !ok {
			continue
		}
		m := map[string]time.Duration{}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "_ns=")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				tb.Fatalf("bad phase line %q", l)
			}
			m[k] = time.Duration(n)
		}
		out = append(out, m)
	}
	return out
}

// Lines returns what the agent printed so far.
func (a *Agent) Lines() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.lines...)
}

// Wait waits for the agent to exit by itself and returns its final report.
func (a *Agent) Wait(tb testing.TB, timeout time.Duration) Report {
	tb.Helper()
	select {
	case <-a.done:
	case <-time.After(timeout):
		tb.Fatalf("agent still running after %v", timeout)
	}
	if st := a.Cmd.ProcessState; st == nil || !st.Success() {
		tb.Fatalf("agent failed: %v", st)
	}
	return a.report(tb)
}

// Stop asks the agent to exit (SIGTERM) and returns its final report.
func (a *Agent) Stop(tb testing.TB) Report {
	tb.Helper()
	a.Cmd.Process.Signal(syscall.SIGTERM)
	return a.Wait(tb, 30*time.Second)
}

func (a *Agent) report(tb testing.TB) Report {
	tb.Helper()
	lines := a.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.HasPrefix(lines[i], "{") {
			continue
		}
		var r Report
		if err := json.NewDecoder(bytes.NewReader([]byte(lines[i]))).Decode(&r); err != nil {
			tb.Fatalf("agent report %q: %v", lines[i], err)
		}
		return r
	}
	tb.Fatalf("agent printed no report: %q", lines)
	return Report{}
}

// Report asks the running agent for its counts so far (SIGUSR1) and
// returns them.
func (a *Agent) Report(tb testing.TB) Report {
	tb.Helper()
	seen := len(a.Lines())
	if err := a.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		tb.Fatalf("agent %d: %v", a.PID, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := a.Lines()
		for _, l := range lines[seen:] {
			if strings.HasPrefix(l, "{") {
				var r Report
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					tb.Fatalf("agent report %q: %v", l, err)
				}
				return r
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("agent %d printed no report on SIGUSR1", a.PID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Output returns everything the agent printed, one line each.
func (a *Agent) Output() string { return strings.Join(a.Lines(), "\n") }

// A BPFCall is one call of regenerateBPF as the agent logged it (-log-bpf):
// its regeneration's number, the revision it returned, and its error's
// type and message ("" for none).
type BPFCall struct {
	Seq, Revnum      string
	ErrType, Message string
}

// ResultCaptures capture what BPFCalls gives of each call: its
// regeneration's number (attribute seq) and its revision (rev).
var ResultCaptures = []string{"seq=ctx.seq", "rev=ret0"}

var bpfLine = regexp.MustCompile(`^regenerateBPF seq=(\d+) revnum=(\d+) error_type=(\S+) error=(".*")$`)

// OwnErrorType is the agent's own error type: a tracer can name it, not
// read its message.
const OwnErrorType = "*endpoint.compileError"

// Want is the call as a tracer should report it, in the form of Describe:
// the message of OwnErrorType left out.
func (c BPFCall) Want() string {
	msg := c.Message
	if c.ErrType == OwnErrorType {
		msg = ""
	}
	return Describe(c.Seq, c.Revnum, c.ErrType, msg)
}

// Describe puts a traced call of regenerateBPF in the form of
// BPFCall.Want: its seq and rev attributes, its error's type and message.
func Describe(seq, rev, errType, message string) string {
	return fmt.Sprintf("seq=%s rev=%s error_type=%s error=%q", seq, rev, errType, message)
}

// BPFCalls returns the calls of regenerateBPF the agent logged.
func (a *Agent) BPFCalls(tb testing.TB) []BPFCall {
	tb.Helper()
	var out []BPFCall
	for _, l := range a.Lines() {
		m := bpfLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		msg, err := strconv.Unquote(m[4])
		if err != nil {
			tb.Fatalf("agent line %q: %v", l, err)
		}
		c := BPFCall{Seq: m[1], Revnum: m[2], ErrType: m[3], Message: msg}
		if c.ErrType == "-" {
			c.ErrType = ""
		}
		out = append(out, c)
	}
	return out
}

// A Regeneration is one the agent logged with -log-regenerations: the
// endpoint and what a capture of it reads, as the agent printed them.
type Regeneration struct {
	EndpointID, Pod, PolicyRevision string
}

var regenLine = regexp.MustCompile(`^regenerated endpoint_id=(\d+) k8s_pod_name=(\S+) policy_revision=(\d+)$`)

// Regenerations returns the regenerations the agent logged.
func (a *Agent) Regenerations() []Regeneration {
	var out []Regeneration
	for _, l := range a.Lines() {
		if m := regenLine.FindStringSubmatch(l); m != nil {
			out = append(out, Regeneration{EndpointID: m[1], Pod: m[2], PolicyRevision: m[3]})
		}
	}
	return out
}

// Symbol names of the functions the agent counts, as the tracer resolves
// them.
const (
	Regenerate     = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
	RegenerateBPF  = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	SyncPolicyMap  = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump"
	ResolvePolicy  = "github.com/cilium/cilium/pkg/policy.(*Repository).resolvePolicyLocked"
	Upsert         = "github.com/cilium/cilium/pkg/ipcache.(*IPCache).upsertLocked"
	Allocate       = "github.com/cilium/cilium/pkg/identity/cache.(*CachingIdentityAllocator).AllocateIdentity"
	DumpToSlice    = "github.com/cilium/cilium/pkg/maps/policymap.(*PolicyMap).DumpToSlice"
	CompileAndLoad = "github.com/cilium/cilium/pkg/datapath/loader.(*loader).compileAndLoad"
	CTLookup       = "github.com/cilium/cilium/pkg/maps/ctmap.(*Map).lookup"
	// Phased spends known, self-measured times in known states (-phased):
	// computing, then waiting in LockAlive, WaitForProxy and ReadPipe.
	Phased       = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regeneratePhased"
	LockAlive    = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).lockAlive"
	WaitForProxy = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).waitForProxyCompletions"
	ReadPipe     = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).readPipe"
	// RealizeBPFState is inlined into Regenerate, around its call of
	// RegenerateBPF.
	RealizeBPFState = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).realizeBPFState"
)

// Counted lists every function the agent counts.
var Counted = []string{Regenerate, RegenerateBPF, SyncPolicyMap, ResolvePolicy, Upsert, Allocate, DumpToSlice, CompileAndLoad, CTLookup}

// A Buffer is a bytes.Buffer that one goroutine may write while another
// reads it: a test's view of a tracer's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
