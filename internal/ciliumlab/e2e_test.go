package ciliumlab_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/chtest"
	"github.com/cilium-tracer/tracer/internal/ciliumlab"
	"github.com/cilium-tracer/tracer/internal/otlptest"
	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/export"
)

const (
	regenerate    = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
	regenerateBPF = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	regenerateAll = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate*"
	// regenerate defers it, and the agent's clock around the call stops
	// first thing in it: traced with regenerate, it gives the stretch the
	// agent timed (ciliumlab.Call.Timed).
	regenerateStats = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).updateRegenerationStatistics"
	// Regeneration rounds per check: each switches every pod's Debug
	// option once.
	rounds = 3
)

var tracerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ciliumlab-e2e")
	if err != nil {
		panic(err)
	}
	tracerBin = filepath.Join(dir, "tracer")
	build := exec.Command("go", "build", "-o", tracerBin, "./cmd/tracer")
	build.Dir = testagent.Root()
	if out, err := build.CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binaries builds the cilium version once per machine (cached) and returns
// its binaries. A build that fails fails the test: no skip.
func binaries(t *testing.T, version string) *ciliumlab.Binaries {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	b, err := ciliumlab.Build(ctx, version, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startLab starts the real agent with three pods; at the end of the test
// it is torn down, and anything it left fails the test.
func startLab(t *testing.T, b *ciliumlab.Binaries, stripped bool) *ciliumlab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lab, err := ciliumlab.Start(ctx, ciliumlab.Config{Binaries: b, Stripped: stripped, Pods: 3, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cilium-agent log, last lines:\n%s", lab.LogTail(15))
		}
		if err := lab.Close(); err != nil {
			t.Errorf("the lab left something behind: %v", err)
		}
	})
	return lab
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// run is one tracer process in the background.
type run struct {
	cmd            *exec.Cmd
	stdout, stderr *testagent.Buffer
	exited         chan struct{}
}

// startTracer runs the tracer with args and waits until its output says
// ready (want), the way a user waits for "tracing" before acting.
func startTracer(t *testing.T, want string, args ...string) *run {
	t.Helper()
	r := &run{cmd: exec.Command(tracerBin, args...), stdout: &testagent.Buffer{}, stderr: &testagent.Buffer{}, exited: make(chan struct{})}
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.exited })
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(r.stderr.String(), want) {
		select {
		case <-r.exited:
			t.Fatalf("tracer %q exited before %q: %s", args, want, r.stderr)
		case <-deadline:
			t.Fatalf("tracer %q: no %q in 2 minutes: %s", args, want, r.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return r
}

// stop ends the tracer as Ctrl-C does and checks it exits 0.
func (r *run) stop(t *testing.T) {
	t.Helper()
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("tracer did not stop in 2 minutes: %s", r.stderr)
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("tracer exited %d: %s", code, r.stderr)
	}
}

// tracer runs the tracer to completion and returns its standard output.
func tracer(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tracerBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tracer %q: %v: %s", args, err, stderr.String())
	}
	return stdout.String()
}

// spans parses JSON spans, one per line.
func spans(t *testing.T, r io.Reader) []export.JSONSpan {
	t.Helper()
	var out []export.JSONSpan
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var sp export.JSONSpan
		if err := json.Unmarshal(s.Bytes(), &sp); err != nil {
			t.Fatalf("span %q: %v", s.Text(), err)
		}
		out = append(out, sp)
	}
	return out
}

// calls turns the traced regenerate spans into the lab's calls, each with
// the stretch up to its traced updateRegenerationStatistics.
func calls(t *testing.T, sps []export.JSONSpan) []ciliumlab.Call {
	t.Helper()
	stats := map[string]time.Time{} // parent span ID -> entry
	for _, s := range sps {
		if s.Function == regenerateStats && s.ParentSpanID != "" {
			if _, dup := stats[s.ParentSpanID]; !dup {
				stats[s.ParentSpanID] = s.Time
			}
		}
	}
	var cs []ciliumlab.Call
	for _, s := range sps {
		if s.Function != regenerate {
			continue
		}
		ep, err := strconv.ParseUint(s.Attrs["endpoint_id"], 10, 16)
		if err != nil {
			t.Fatalf("regenerate span without a valid endpoint_id: %+v", s)
		}
		c := ciliumlab.Call{PID: s.PID, EndpointID: uint16(ep), Start: s.Time,
			Duration: time.Duration(s.DurationNS), Unfinished: s.Unfinished}
		if at, ok := stats[s.SpanID]; ok {
			c.Timed = at.Sub(s.Time)
		}
		cs = append(cs, c)
	}
	return cs
}

// regenerations marks a quiet point, makes every pod regenerate rounds
// times, marks again, and returns what the agent recorded in between.
func regenerations(t *testing.T, lab *ciliumlab.Lab) (ciliumlab.Truth, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	a, err := lab.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Regenerate(ctx, rounds); err != nil {
		t.Fatal(err)
	}
	b, err := lab.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := lab.Truth(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if truth.Count == 0 {
		t.Fatal("the agent counted no regenerations: the lab did not regenerate")
	}
	n := 0
	for _, l := range truth.Logged {
		n += len(l)
	}
	t.Logf("cilium counted %d regenerations (%d logged over %d endpoints), %.3f s in all", truth.Count, n, len(truth.Logged), truth.Seconds)
	return truth, n
}

// traceRegenerations traces regenerate and regenerateBPF with the
// endpoint ID captured while the lab regenerates, and checks every call
// against the agent's own record.
func traceRegenerations(t *testing.T, lab *ciliumlab.Lab, extra ...string) []export.JSONSpan {
	t.Helper()
	args := append([]string{"trace", "--pid", strconv.Itoa(lab.AgentPID()), "--output", "json",
		"--func", regenerate, "--func", regenerateBPF, "--func", regenerateStats, "--capture", "endpoint_id=e.ID"}, extra...)
	r := startTracer(t, "tracer: tracing", args...)
	truth, _ := regenerations(t, lab)
	r.stop(t)
	sps := spans(t, strings.NewReader(r.stdout.String()))
	cs := calls(t, sps)
	if err := truth.Check(cs); err != nil {
		t.Errorf("tracer trace %q against cilium's own record:\n%v", extra, err)
	}
	logTraced(t, truth, cs)
	return sps
}

func logTraced(t *testing.T, truth ciliumlab.Truth, cs []ciliumlab.Call) {
	var n int
	var sum, timed time.Duration
	for _, c := range cs {
		if c.PID == truth.From.PID && !c.Start.Before(truth.From.Time) && c.Start.Before(truth.To.Time) {
			n++
			sum += c.Duration
			timed += c.Timed
		}
	}
	t.Logf("traced %d regenerate calls, %.4f s (%.4f s up to updateRegenerationStatistics); cilium: %d, %.4f s", n, sum.Seconds(), timed.Seconds(), truth.Count, truth.Seconds)
}

// offsetsFile resolves the endpoint_id capture on the unstripped build,
// for tracing the stripped one.
func offsetsFile(t *testing.T, b *ciliumlab.Binaries) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "offsets.json")
	tracer(t, "offsets", "--binary", b.Agent, "--func", regenerateAll, "--func", regenerateStats, "--capture", "endpoint_id=e.ID", "-o", f)
	return f
}

// daemonRegenerations runs tracer daemon on the lab's agent and checks its
// spans as traceRegenerations does.
func daemonRegenerations(t *testing.T, lab *ciliumlab.Lab, offsets string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "spans.json")
	cfg := fmt.Sprintf(`target: {pid: %d}
probes:
  - func: %q
    captures: ["endpoint_id=e.ID"]
  - func: %q
  - func: %q
exporters:
  - json: {path: %q}
pipeline: {batch_timeout: 100ms}
jitter: {start: 0s, reattach: 0s}
metrics: {listen: none}
`, lab.AgentPID(), regenerate, regenerateBPF, regenerateStats, out)
	if offsets != "" {
		cfg += fmt.Sprintf("offsets: %q\n", offsets)
	}
	path := filepath.Join(dir, "daemon.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startTracer(t, "msg=tracing", "daemon", "--config", path)
	truth, _ := regenerations(t, lab)
	r.cmd.Process.Signal(syscall.SIGTERM)
	<-r.exited
	if code := r.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("tracer daemon exited %d: %s", code, r.stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cs := calls(t, spans(t, f))
	if err := truth.Check(cs); err != nil {
		t.Errorf("tracer daemon against cilium's own record:\n%v", err)
	}
	logTraced(t, truth, cs)
}

// TestRealAgent traces a real cilium-agent, built from its module, with
// real endpoints from the real CNI plugin, and compares every traced
// regeneration with the agent's own metrics and log.
func TestRealAgent(t *testing.T) {
	for _, version := range []string{ciliumlab.Pinned, ciliumlab.Previous} {
		t.Run(version, func(t *testing.T) {
			b := binaries(t, version)
			offsets := offsetsFile(t, b)
			t.Run("unstripped", func(t *testing.T) {
				lab := startLab(t, b, false)
				t.Run("trace", func(t *testing.T) { traceRegenerations(t, lab) })
				t.Run("daemon", func(t *testing.T) { daemonRegenerations(t, lab, "") })
			})
			t.Run("stripped", func(t *testing.T) {
				cni := traceCNI(t, b)
				lab := startLab(t, b, true)
				t.Run("cni", func(t *testing.T) { cni.check(t, lab) })
				t.Run("trace", func(t *testing.T) { traceRegenerations(t, lab, "--offsets", offsets) })
				t.Run("daemon", func(t *testing.T) { daemonRegenerations(t, lab, offsets) })
				if version == ciliumlab.Pinned {
					commands(t, lab, offsets)
				}
			})
		})
	}
}

// cniAdd is what the real CNI plugin runs for a pod ADD.
const cniAdd = "github.com/cilium/cilium/plugins/cilium-cni/cmd.(*Cmd).Add"

// cniTrace traces every process that runs the lab's cilium-cni.
type cniTrace struct{ r *run }

// traceCNI starts tracing cilium-cni's ADD before the lab exists: every
// pod's ADD is a process of its own, started after the tracer.
func traceCNI(t *testing.T, b *ciliumlab.Binaries) cniTrace {
	return cniTrace{startTracer(t, "in every process that runs", "trace", "--binary", b.CNI, "--func", cniAdd, "--output", "json")}
}

// check compares the traced ADDs with the pods the lab created, each
// through one run of cilium-cni: one completed call per pod, each in a
// process of its own.
func (c cniTrace) check(t *testing.T, lab *ciliumlab.Lab) {
	c.r.stop(t)
	pids := map[int]bool{}
	done := 0
	var took []time.Duration
	for _, s := range spans(t, strings.NewReader(c.r.stdout.String())) {
		if s.Function != cniAdd || s.Unfinished {
			t.Errorf("span %s unfinished=%v, want completed ADDs only", s.Function, s.Unfinished)
			continue
		}
		done++
		pids[s.PID] = true
		took = append(took, time.Duration(s.DurationNS).Round(time.Millisecond))
	}
	t.Logf("%d cilium-cni ADDs traced in %d processes, taking %v; the lab created %d pods", done, len(pids), took, len(lab.Pods))
	if done != len(lab.Pods) || len(pids) != len(lab.Pods) || done == 0 {
		t.Errorf("%d ADDs traced in %d processes, the lab created %d pods through cilium-cni:\n%s", done, len(pids), len(lab.Pods), c.r.stderr)
	}
	if !strings.Contains(c.r.stderr.String(), fmt.Sprintf("%d processes ran the traced executable", len(lab.Pods))) {
		t.Errorf("the summary does not list the %d cilium-cni processes:\n%s", len(lab.Pods), c.r.stderr)
	}
}

// commands runs every user-facing command against the stripped real
// agent, as a user would.
func commands(t *testing.T, lab *ciliumlab.Lab, offsets string) {
	pid := strconv.Itoa(lab.AgentPID())
	t.Run("symbols", func(t *testing.T) {
		out := tracer(t, "symbols", "--pid", pid, "--func", regenerateAll)
		if !strings.Contains(strings.SplitN(out, "\n", 2)[0], " stripped") {
			t.Errorf("symbols does not say the agent is stripped:\n%s", out)
		}
		for _, fn := range []string{regenerate, regenerateBPF} {
			found := false
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) >= 5 && f[0] == fn && !strings.Contains(l, "REFUSED") {
					found = true
				}
			}
			if !found {
				t.Errorf("symbols does not list %s with its RET offsets:\n%s", fn, out)
			}
		}
	})
	t.Run("targets", func(t *testing.T) {
		out := tracer(t, "targets")
		found := false
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == pid && strings.Contains(l, "cilium-agent") {
				found = true
			}
		}
		if !found {
			t.Errorf("targets does not list the agent, PID %s:\n%s", pid, out)
		}
	})
	t.Run("pprof", func(t *testing.T) {
		prof := filepath.Join(t.TempDir(), "regen.pb.gz")
		traceRegenerations(t, lab, "--offsets", offsets, "--pprof", prof)
		top, err := exec.Command("go", "tool", "pprof", "-top", prof).CombinedOutput()
		if err != nil {
			t.Fatalf("go tool pprof: %v: %s", err, top)
		}
		if !strings.Contains(string(top), "regenerateBPF") {
			t.Errorf("the profile has no regenerateBPF:\n%s", top)
		}
	})
	t.Run("export", func(t *testing.T) { exportSpans(t, lab, offsets) })
	t.Run("readme", func(t *testing.T) { readme(t, lab) })
	t.Run("entry-only", func(t *testing.T) { entryOnly(t, lab, offsets) })
	t.Run("follow", func(t *testing.T) { follow(t, lab, offsets) })
	t.Run("sample-is-caught", func(t *testing.T) {
		// The check must catch a trace that misses calls: tracing one
		// call in two has to fail it.
		args := []string{"trace", "--pid", strconv.Itoa(lab.AgentPID()), "--output", "json", "--sample", "2",
			"--func", regenerate, "--func", regenerateStats, "--capture", "endpoint_id=e.ID", "--offsets", offsets}
		r := startTracer(t, "tracer: tracing", args...)
		truth, _ := regenerations(t, lab)
		r.stop(t)
		err := truth.Check(calls(t, spans(t, strings.NewReader(r.stdout.String()))))
		if err == nil || !strings.Contains(err.Error(), "cilium counted") {
			t.Fatalf("the check passed a trace of one regeneration in two: %v", err)
		}
		t.Logf("the check failed, as it must:\n%v", err)
	})
}

// exportSpans traces the real agent with the ClickHouse and OTLP
// exporters on, and checks that both received every traced call, with its
// endpoint ID, as the terminal printed them.
func exportSpans(t *testing.T, lab *ciliumlab.Lab, offsets string) {
	ch := chtest.New(t, 24, 8)
	otlp := otlptest.NewGRPC(t)
	sps := traceRegenerations(t, lab, "--offsets", offsets, "--clickhouse", ch.Addr(), "--otlp", otlp.Addr(), "--otlp-insecure")
	want := map[string]string{} // span ID -> endpoint_id
	for _, s := range sps {
		want[s.SpanID] = s.Attrs["endpoint_id"]
	}
	_, rows := ch.Snapshot()
	got := map[string]string{}
	for _, r := range rows {
		got[r.SpanID] = r.SpanAttributes["endpoint_id"]
	}
	if !maps.Equal(got, want) {
		t.Errorf("ClickHouse got %d spans, the terminal printed %d; they differ:\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	gotOTLP := map[string]string{}
	for _, s := range otlp.Spans() {
		gotOTLP[s.SpanID], _ = s.Attributes["endpoint_id"].(string)
	}
	if !maps.Equal(gotOTLP, want) {
		t.Errorf("OTLP got %d spans, the terminal printed %d; they differ:\ngot  %v\nwant %v", len(gotOTLP), len(want), gotOTLP, want)
	}
}

// readme runs the README's tracer commands, as written, against the real
// agent: the only change is a shorter --duration. The daemon's are left to
// daemonRegenerations, since the README's config targets a Docker
// container and waits out a fleet's start jitter.
func readme(t *testing.T, lab *ciliumlab.Lab) {
	text, err := os.ReadFile(filepath.Join(testagent.Root(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	inSh := false
	var cur string
	for _, l := range strings.Split(string(text), "\n") {
		switch {
		case strings.HasPrefix(l, "```sh"):
			inSh = true
		case strings.HasPrefix(l, "```"):
			inSh = false
		case inSh:
			cur += l
			if strings.HasSuffix(cur, "\\") {
				cur = strings.TrimSuffix(cur, "\\")
				continue
			}
			if strings.HasPrefix(cur, "tracer ") && !strings.HasPrefix(cur, "tracer daemon") {
				cmds = append(cmds, cur)
			}
			cur = ""
		}
	}
	if len(cmds) < 4 {
		t.Fatalf("found %d tracer commands in the README: %q", len(cmds), cmds)
	}
	dir := t.TempDir()
	// The README's offsets example reads an unstripped build beside it.
	if err := os.Symlink(lab.Binaries().Agent, filepath.Join(dir, "cilium-agent.unstripped")); err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		c = strings.ReplaceAll(c, "--duration 60s", "--duration 20s")
		traces := strings.HasPrefix(c, "tracer trace")
		if traces && !strings.Contains(c, "--duration") {
			c = strings.Replace(c, "tracer trace", "tracer trace --duration 20s", 1)
		}
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(tracerBin)+":"+os.Getenv("PATH"))
		stdout, stderr := &testagent.Buffer{}, &testagent.Buffer{}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if traces {
			for !strings.Contains(stderr.String(), "tracer: tracing") && len(exited) == 0 {
				time.Sleep(50 * time.Millisecond)
			}
			if err := lab.Regenerate(context.Background(), 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-exited; err != nil {
			t.Errorf("README command %q: %v\n%s", c, err, stderr.String())
			continue
		}
		if traces && !strings.Contains(stdout.String(), "regenerateBPF") {
			t.Errorf("README command %q traced no regenerateBPF:\n%s\n%s", c, stdout.String(), stderr.String())
		}
		if strings.Contains(c, "--capture") && traces && !strings.Contains(stdout.String(), "pod=pod") {
			t.Errorf("README command %q captured no pod name:\n%s", c, stdout.String())
		}
		t.Logf("%s\n%s", c, firstLines(stdout.String(), 6))
	}
}

// hotFunc runs thousands of times a second in the agent while endpoints
// regenerate: the JSON scanner's string state, under the API's and the
// datapath loader's JSON.
const hotFunc = "encoding/json.stateInString"

// entryOnly counts a hot function of the real agent per caller stack,
// while a second tracer checks the regenerations it runs through.
func entryOnly(t *testing.T, lab *ciliumlab.Lab, offsets string) {
	hot := startTracer(t, "tracer: tracing", "trace", "--pid", strconv.Itoa(lab.AgentPID()), "--entry-only", "--func", hotFunc)
	traceRegenerations(t, lab, "--offsets", offsets)
	hot.stop(t)
	out := hot.stdout.String() + hot.stderr.String()
	if !strings.Contains(out, "stateInString") {
		t.Fatalf("--entry-only printed no stacks of %s:\n%s", hotFunc, out)
	}
	t.Logf("--entry-only on %s:\n%s", hotFunc, firstLines(out, 15))
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// follow traces across a restart of the agent: tracing resumes on the new
// process, and both processes' regenerations are checked.
func follow(t *testing.T, lab *ciliumlab.Lab, offsets string) {
	r := startTracer(t, "tracer: tracing", "trace", "--process", "cilium-agent", "--follow", "--output", "json",
		"--func", regenerate, "--func", regenerateStats, "--capture", "endpoint_id=e.ID", "--offsets", offsets)
	before, _ := regenerations(t, lab)
	oldPID := lab.AgentPID()
	if err := lab.StopAgent(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := lab.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(r.stderr.String(), "re-attached"); {
		if time.Now().After(deadline) {
			t.Fatalf("the tracer did not re-attach to the restarted agent (PID %d, was %d):\n%s", lab.AgentPID(), oldPID, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	after, _ := regenerations(t, lab)
	r.stop(t)
	cs := calls(t, spans(t, strings.NewReader(r.stdout.String())))
	if err := before.Check(cs); err != nil {
		t.Errorf("before the restart:\n%v", err)
	}
	if err := after.Check(cs); err != nil {
		t.Errorf("after the restart:\n%v", err)
	}
}

const forcedFailureEnv = "CILIUMLAB_FORCED_FAILURE"

// TestForcedFailure is run by TestLeavesNothing in a child process: it
// fails in the middle of a run, with the agent up, pods made and the
// tracer attached.
func TestForcedFailure(t *testing.T) {
	if os.Getenv(forcedFailureEnv) == "" {
		return // only as TestLeavesNothing's child
	}
	lab := startLab(t, binaries(t, ciliumlab.Pinned), true)
	startTracer(t, "tracer: tracing", "trace", "--pid", strconv.Itoa(lab.AgentPID()), "--func", regenerateAll)
	ctx := context.Background()
	if err := lab.Regenerate(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Fatal("forced failure in the middle of the run")
}

// TestLeavesNothing fails a run in the middle and checks that the lab's
// teardown left no process, cgroup, mount, network namespace or sysctl
// change on the host.
func TestLeavesNothing(t *testing.T) {
	b := binaries(t, ciliumlab.Pinned)
	before := hostState(t)
	// Another lab on the machine (a person's make demo-cilium) is not
	// this run's to account for.
	running := map[int]bool{}
	for _, pid := range b.Processes() {
		running[pid] = true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestForcedFailure$", "-test.v")
	cmd.Env = append(os.Environ(), forcedFailureEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "forced failure in the middle of the run") {
		t.Fatalf("the forced failure did not happen (err %v):\n%s", err, out)
	}
	if strings.Contains(string(out), "left something behind") {
		t.Errorf("teardown after a failure left something:\n%s", out)
	}
	for _, pid := range b.Processes() {
		if !running[pid] {
			t.Errorf("cilium process %d, started by the failed run, still runs", pid)
		}
	}
	if after := hostState(t); after != before {
		t.Errorf("the host changed across a failed run:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// hostState is what a lab must not change on the host: its mounts,
// network namespaces and links, cgroups of the lab, and the sysctls the
// agent writes.
func hostState(t *testing.T) string {
	t.Helper()
	var s strings.Builder
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	s.Write(mounts)
	netns, _ := os.ReadDir("/run/netns")
	for _, e := range netns {
		fmt.Fprintf(&s, "netns %s\n", e.Name())
	}
	links, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(links), "\n") {
		// Counters and state change by themselves; the names do not.
		if f := strings.Fields(l); len(f) > 1 {
			fmt.Fprintf(&s, "link %s\n", f[1])
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/unified/tracer-ciliumlab-*")
	more, _ := filepath.Glob("/sys/fs/cgroup/tracer-ciliumlab-*")
	fmt.Fprintf(&s, "cgroups %v\n", append(cgroups, more...))
	for _, p := range []string{"kernel/unprivileged_bpf_disabled", "kernel/timer_migration", "net/core/bpf_jit_enable", "net/core/bpf_jit_harden"} {
		v, _ := os.ReadFile("/proc/sys/" + p)
		fmt.Fprintf(&s, "%s=%s", p, v)
	}
	return s.String()
}
