package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/internal/otlptest"
	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

var tracerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tracer-cli")
	if err != nil {
		panic(err)
	}
	// Readable by all: one test runs the tracer as nobody.
	os.Chmod(dir, 0o755)
	tracerBin = filepath.Join(dir, "tracer")
	if pre := os.Getenv(testagent.PrebuiltEnv); pre != "" {
		tracerBin = filepath.Join(pre, "tracer")
	} else if out, err := exec.Command("go", "build", "-o", tracerBin, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	testagent.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the tracer binary.
type result struct {
	stdout, stderr string
	code           int
}

func tracer(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return run(t, env, append([]string{tracerBin}, args...))
}

// run runs argv to its end, within a hang guard.
func run(t *testing.T, env, argv []string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%q hung", argv)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustFail checks the contract for bad input: non-zero exit, one line on
// stderr naming the problem, never a panic.
func mustFail(t *testing.T, r result, want string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("exit code 0, want failure; stdout %q stderr %q", r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "tracer: ") {
		t.Errorf("stderr is not one tracer: line: %q", r.stderr)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("tracer panicked: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not say %q", r.stderr, want)
	}
}

func TestBadInput(t *testing.T) {
	agentBin := testagent.Build(t, testagent.Variant{Stripped: true})
	dir := t.TempDir()

	truncated := filepath.Join(dir, "truncated")
	b, err := os.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(truncated, b[:len(b)/3], 0o755)
	// A valid ELF header over garbage: section and program tables point
	// nowhere sensible.
	corrupt := filepath.Join(dir, "corrupt")
	c := append([]byte(nil), b...)
	for i := 64; i < len(c); i += 7 {
		c[i] ^= 0x5a
	}
	os.WriteFile(corrupt, c, 0o755)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("not an executable "), 100), 0o644)

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	agent := testagent.Start(t, agentBin, "-workers", "2", "-interval", "10ms")
	pid := strconv.Itoa(agent.PID)
	bpf := "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown function lists the closest", []string{"trace", "--pid", pid, "--func", "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBFP"}, bpf},
		{"glob matching nothing", []string{"symbols", "--binary", agentBin, "--func", "nosuch.*"}, `no function matches "nosuch.*"`},
		{"non-Go binary", []string{"symbols", "--binary", "/bin/true", "--func", "main.main"}, "not a Go executable"},
		{"non-Go process", []string{"trace", "--pid", strconv.Itoa(sleeper.Process.Pid), "--func", "main.main"}, "not a Go executable"},
		{"truncated ELF", []string{"symbols", "--binary", truncated, "--func", "main.main"}, truncated},
		{"corrupt ELF", []string{"symbols", "--binary", corrupt, "--func", "main.main"}, corrupt},
		{"not ELF", []string{"symbols", "--binary", garbage, "--func", "main.main"}, "not an ELF file"},
		{"missing file", []string{"symbols", "--binary", filepath.Join(dir, "nope"), "--func", "main.main"}, "no such file"},
		{"dead PID", []string{"trace", "--pid", strconv.Itoa(dead.Process.Pid), "--func", bpf}, strconv.Itoa(dead.Process.Pid)},
		{"negative PID", []string{"trace", "--pid", "-3", "--func", bpf}, "-3"},
		{"no function", []string{"trace", "--pid", pid}, "--func or --preset is required"},
		{"bad sample", []string{"trace", "--pid", pid, "--func", bpf, "--sample", "0"}, "--sample"},
		{"bad output", []string{"trace", "--pid", pid, "--func", bpf, "--output", "xml"}, "--output"},
		{"bad flag", []string{"trace", "--pid", pid, "--func", bpf, "--duration", "soon"}, "soon"},
		{"two targets", []string{"trace", "--pid", pid, "--process", "x", "--func", bpf}, "only one"},
		{"too many uprobes", []string{"trace", "--pid", pid, "--func", "*"}, "uprobes to probe, at most 1024 functions and 4096 uprobes"},
		{"every process: missing file", []string{"trace", "--binary", filepath.Join(dir, "nope"), "--func", bpf}, "no such file"},
		{"every process: non-Go file", []string{"trace", "--binary", "/bin/true", "--func", "main.main"}, "not a Go executable"},
		{"every process: directory", []string{"trace", "--binary", dir, "--func", bpf}, "is a directory"},
		{"every process: not ELF", []string{"trace", "--binary", garbage, "--func", bpf}, "not an ELF file"},
		{"cluster without clickhouse", []string{"trace", "--pid", pid, "--func", bpf, "--clickhouse-cluster", "c"}, "--clickhouse-cluster"},
		{"bad addrs order", []string{"trace", "--pid", pid, "--func", bpf, "--clickhouse", "127.0.0.1:1", "--clickhouse-addrs-order", "shuffled"}, "shuffled"},
		{"by process of one process", []string{"trace", "--pid", pid, "--func", bpf, "--by-process"}, "--by-process"},
		{"bad syscall threshold", []string{"trace", "--pid", pid, "--func", bpf, "--syscalls", "--syscall-min", "0"}, "--syscall-min"},
		{"syscalls without calls", []string{"trace", "--pid", pid, "--func", bpf, "--syscalls", "--entry-only"}, "--syscalls needs calls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, tracer(t, nil, tc.args...), tc.want)
		})
	}

	t.Run("no privileges", func(t *testing.T) {
		// The agent runs as nobody too, so only the missing BPF
		// privileges stand in the way.
		ndir, err := os.MkdirTemp("", "nobody")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(ndir)
		os.Chmod(ndir, 0o755)
		bin := filepath.Join(ndir, "nobody-agent")
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd := exec.Command(bin, "-workers", "1")
		cmd.SysProcAttr = nobody
		a := testagent.StartCmd(t, cmd)

		tr := exec.Command(tracerBin, "trace", "--pid", strconv.Itoa(a.PID), "--func", bpf, "--duration", "1s")
		tr.SysProcAttr = nobody
		var stderr bytes.Buffer
		tr.Stderr = &stderr
		err = tr.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		mustFail(t, result{stderr: stderr.String(), code: code}, "root")
	})

	// None of this may have hurt the target.
	if r := agent.Stop(t); r.Counts[bpf] == 0 {
		t.Errorf("agent stopped regenerating: %+v", r)
	}
}

// jsonCall is what `trace --output json` prints per call.
type jsonCall struct {
	Function   string            `json:"function"`
	PID        int               `json:"pid"`
	Unfinished bool              `json:"unfinished"`
	DurationNS int64             `json:"duration_ns"`
	Attrs      map[string]string `json:"attrs"`
	Breakdown  *struct {
		MaxGapNS int64 `json:"max_gap_ns"`
	} `json:"breakdown"`
}

// parseCalls parses the stdout of `trace --output json`: every line is one
// call.
func parseCalls(t *testing.T, out string) []jsonCall {
	t.Helper()
	if out == "" {
		return nil
	}
	var cs []jsonCall
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var c jsonCall
		if err := json.Unmarshal([]byte(line), &c); err != nil || c.Function == "" {
			t.Fatalf("stdout line %q is not a call in JSON (%v)", line, err)
		}
		cs = append(cs, c)
	}
	return cs
}

// With --output json every stdout line is a call in JSON, each lasting
// what the agent measured for the call it numbered, and the summary goes
// to stderr with the agent's count of calls.
func TestTraceJSON(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	a := testagent.Start(t, bin, "-wait-start", "-measure", "-workers", "4", "-iterations", "5", "-interval", "1ms",
		"-policy-depth", "3", "-policy-sleep", "1ms")
	r := startTracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--follow=false", "--output", "json",
		"--capture", testagent.SeqCapture, "--func", testagent.ResolvePolicy)
	r.waitFor(t, "tracing 1 functions", 30*time.Second)
	a.Begin(t)
	report := a.Wait(t, 30*time.Second)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("tracer still running 30s after the target exited")
	}
	if !r.cmd.ProcessState.Success() {
		t.Fatalf("trace: %v: %s", r.cmd.ProcessState, r.stderr)
	}
	cs := parseCalls(t, r.stdout.String())
	for _, c := range cs {
		if _, err := report.CheckDuration(c.Function, c.Attrs["seq"], time.Duration(c.DurationNS)); err != nil {
			t.Error(err)
		}
	}
	n := report.Counts[testagent.ResolvePolicy]
	if uint64(len(cs)) != n || n != 4*5*3 {
		t.Errorf("%d calls on stdout, the agent made %d (want 60)", len(cs), n)
	}
	// The first line says how the probes ran.
	feats := kernel.Probe()
	mode, err := feats.Mode()
	if err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(r.stderr.String(), "\n"); first != "tracer: "+feats.Describe(mode) {
		t.Errorf("first line %q, want the mode %q", first, feats.Describe(mode))
	}
	row := regexp.MustCompile(`(?m)^\s*(\d+)\s.*` + regexp.QuoteMeta(testagent.ResolvePolicy) + `$`).FindStringSubmatch(r.stderr.String())
	if !strings.Contains(r.stderr.String(), "untracked") || row == nil || row[1] != strconv.FormatUint(n, 10) {
		t.Errorf("stderr has no summary with %d calls:\n%s", n, r.stderr.String())
	}
}

// A running tracer process.
type running struct {
	cmd            *exec.Cmd
	stdout, stderr *testagent.Buffer
	done           chan struct{}
}

func startTracer(t *testing.T, env []string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(tracerBin, args...), stdout: &testagent.Buffer{}, stderr: &testagent.Buffer{}, done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), env...)
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	return r
}

// waitFor waits until the tracer's stderr contains s.
func (r *running) waitFor(t *testing.T, s string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if strings.Contains(r.stderr.String(), s) {
			return time.Since(start)
		}
		select {
		case <-r.done:
			t.Fatalf("tracer exited waiting for %q: %s", s, r.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q from the tracer after %v: %s", s, timeout, r.stderr.String())
	return 0
}

// wait waits for the tracer to exit by itself, and fails unless it
// succeeded.
func (r *running) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("tracer still running %v later: %s", timeout, r.stderr.String())
	}
	if !r.cmd.ProcessState.Success() {
		t.Fatalf("tracer failed: %v: %s", r.cmd.ProcessState, r.stderr.String())
	}
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("tracer did not stop on SIGINT")
	}
	if !r.cmd.ProcessState.Success() {
		t.Fatalf("tracer failed: %v: %s", r.cmd.ProcessState, r.stderr.String())
	}
}

// --pprof writes a profile that go tool pprof reads, with the time in the
// agent's slow function.
func TestPprof(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	a := testagent.Start(t, bin, "-workers", "4", "-interval", "5ms", "-policy-sleep", "2ms")
	prof := filepath.Join(t.TempDir(), "trace.pb.gz")
	r := tracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--duration", "3s", "--output", "none", "--pprof", prof,
		"--func", "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate*",
		"--func", "github.com/cilium/cilium/pkg/policy.(*Repository).resolvePolicyLocked")
	if r.code != 0 {
		t.Fatalf("trace: %s", r.stderr)
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", prof).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, out)
	}
	// The first row after the header has the most flat time.
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") && i+1 < len(lines) {
			if !strings.Contains(lines[i+1], "resolvePolicyLocked") {
				t.Errorf("top of the profile is not the slow function:\n%s", out)
			}
			return
		}
	}
	t.Errorf("no table from pprof -top:\n%s", out)
}

// --pprof-blocked writes an off-CPU profile: the time each call waited, at
// the function that waited, under the traced function, as much as the
// agent measured each wait itself.
func TestPprofBlocked(t *testing.T) {
	const calls = 4
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	a := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-phased", strconv.Itoa(calls))
	prof := filepath.Join(t.TempDir(), "blocked.pb.gz")
	r := startTracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--follow=false", "--output", "json", "--pprof-blocked", prof, "--func", testagent.Phased)
	r.waitFor(t, "tracing 1 functions", 30*time.Second)
	a.Begin(t)
	a.Wait(t, time.Minute)
	r.wait(t, time.Minute)
	if !r.cmd.ProcessState.Success() {
		t.Fatalf("trace: %v: %s", r.cmd.ProcessState, r.stderr.String())
	}

	f, err := os.Open(prof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultSampleType != "blocked" {
		t.Errorf("default sample type %q, want blocked", p.DefaultSampleType)
	}
	at := map[string]time.Duration{}
	states := map[string]map[string]bool{}
	for _, s := range p.Sample {
		leaf := s.Location[0].Line[0].Function.Name
		if caller := s.Location[1].Line[0].Function.Name; caller != testagent.Phased {
			t.Errorf("wait at %s under %s, want under the traced function", leaf, caller)
		}
		at[leaf] += time.Duration(s.Value[1])
		if states[leaf] == nil {
			states[leaf] = map[string]bool{}
		}
		for _, st := range s.Label["state"] {
			states[leaf][st] = true
		}
	}
	// A loaded node delays samples: each call's waits are placed within
	// its longest gap between samples.
	var gaps time.Duration
	for _, c := range parseCalls(t, r.stdout.String()) {
		if c.Breakdown == nil {
			t.Fatalf("call without a breakdown: %+v", c)
		}
		gaps += time.Duration(c.Breakdown.MaxGapNS)
	}
	want := map[string]time.Duration{}
	for _, ph := range a.Phased(t) {
		want[testagent.LockAlive] += ph["mutex"]
		want[testagent.WaitForProxy] += ph["chan"]
		want[testagent.ReadPipe] += ph["syscall"]
	}
	for fn, state := range map[string]string{testagent.LockAlive: "mutex", testagent.WaitForProxy: "chan receive", testagent.ReadPipe: "syscall"} {
		// Per call, as the breakdown's own test allows.
		tol := calls*2*time.Millisecond + want[fn]/10 + gaps
		if d := at[fn] - want[fn]; d > tol || d < -tol {
			t.Errorf("%s: %v waited in the profile, the agent measured %v (tolerance %v)", fn, at[fn], want[fn], tol)
		}
		if !states[fn][state] {
			t.Errorf("%s: states %v, want %s", fn, states[fn], state)
		}
	}
}

// --otlp sends the same calls the terminal shows to an OTLP receiver.
func TestTraceOTLP(t *testing.T) {
	recv := otlptest.NewGRPC(t)
	bin := testagent.Build(t, testagent.Variant{})
	a := testagent.Start(t, bin, "-workers", "2", "-iterations", "10", "-interval", "5ms", "-start-delay", "2s")
	// The stand-in's build says no cilium release: the flag gives it.
	r := tracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--follow=false", "--output", "json",
		"--otlp", recv.Addr(), "--otlp-insecure", "--func", testagent.RegenerateBPF, "--cilium-version", "v1.18.5")
	if r.code != 0 {
		t.Fatalf("trace: %s", r.stderr)
	}
	terminal := 0
	for _, c := range parseCalls(t, r.stdout) {
		if c.Function == testagent.RegenerateBPF {
			terminal++
		}
	}
	got := 0
	for _, s := range recv.Spans() {
		if s.Name == "endpoint.(*Endpoint).regenerateBPF" {
			got++
		}
		if v := s.Resource["cilium.version"]; v != "v1.18.5" {
			t.Fatalf("span resource cilium.version %v, want v1.18.5", v)
		}
	}
	if got != terminal || got != 20 {
		t.Errorf("OTLP receiver got %d regenerateBPF spans, the terminal showed %d, the agent made 20", got, terminal)
	}
}

// --clickhouse-cluster creates the cluster schema and inserts into its
// Distributed table; with two --clickhouse servers, one down, every span
// reaches the other.
func TestTraceClickHouseCluster(t *testing.T) {
	down, srv := chtest.New(t, 25, 8), chtest.New(t, 25, 8)
	down.Stop()
	bin := testagent.Build(t, testagent.Variant{})
	a := testagent.Start(t, bin, "-workers", "2", "-iterations", "10", "-interval", "5ms", "-start-delay", "2s")
	r := tracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--follow=false", "--output", "none",
		"--clickhouse", down.Addr(), "--clickhouse", srv.Addr(), "--clickhouse-cluster", "tracing", "--func", testagent.RegenerateBPF)
	if r.code != 0 {
		t.Fatalf("trace: %s", r.stderr)
	}
	queries, rows := srv.Snapshot()
	var onCluster, distributed int
	for _, q := range queries {
		if strings.Contains(q, " ON CLUSTER `tracing`") {
			onCluster++
		}
		if strings.Contains(q, "ENGINE = Distributed('tracing', 'otel', 'otel_traces_local', cityHash64(TraceId))") {
			distributed++
		}
	}
	if onCluster != 6 || distributed != 1 {
		t.Errorf("%d statements ON CLUSTER (want 6), %d Distributed traces tables (want 1):\n%s", onCluster, distributed, strings.Join(queries, "\n---\n"))
	}
	if last := queries[len(queries)-1]; !strings.HasPrefix(last, "INSERT INTO `otel`.`otel_traces` (") {
		t.Errorf("last query %q, want the insert into the Distributed table", last)
	}
	if report := a.Wait(t, 30*time.Second); len(rows) != int(report.Counts[testagent.RegenerateBPF]) {
		t.Errorf("%d rows, the agent made %d regenerateBPF calls", len(rows), report.Counts[testagent.RegenerateBPF])
	}
}

// --entry-only counts calls per stack without RET probes: the counts add up
// to the agent's, and the stacks keep the immediate caller and the inlined
// frame that bpftrace's ustack at entry loses.
func TestEntryOnly(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	a := testagent.Start(t, bin, "-wait-start", "-workers", "4", "-iterations", "10", "-interval", "1ms")
	r := startTracer(t, nil, "trace", "--pid", strconv.Itoa(a.PID), "--entry-only", "--follow=false",
		"--func", testagent.RegenerateBPF, "--func", testagent.DumpToSlice)
	r.waitFor(t, "tracing 2 functions", time.Minute)
	a.Begin(t)
	report := a.Wait(t, 30*time.Second)
	r.wait(t, 30*time.Second)
	stdout := r.stdout.String()
	// DumpToSlice's prologue grows the stack on every call, so its entry
	// runs twice per call: each call still counts once.
	for fn, want := range map[string]int{testagent.RegenerateBPF: 40, testagent.DumpToSlice: int(report.Counts[testagent.DumpToSlice])} {
		total := 0
		for _, l := range strings.Split(stdout, "\n") {
			if n, f, ok := strings.Cut(l, " calls of "); ok && f == fn {
				c, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("bad count line %q", l)
				}
				total += c
			}
		}
		if made := int(report.Counts[fn]); total != made || made != want || made == 0 {
			t.Errorf("entry-only counted %d calls of %s, the agent made %d (want %d):\n%s", total, fn, made, want, stdout)
		}
	}
	stack := regexp.MustCompile(`(?s)regenerateBPF\n.*\n    \S+realizeBPFState \(inlined\)\n.*\n    \S+\.\(\*Endpoint\)\.regenerate\n`)
	if !stack.MatchString(stdout) {
		t.Errorf("stack lacks the inlined realizeBPFState and the caller regenerate:\n%s", stdout)
	}
}
