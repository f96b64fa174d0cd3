package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}

// running is a daemon started by a test.
type running struct {
	d      *Daemon
	spans  *testagent.Buffer // JSON exporter output
	logs   *testagent.Buffer
	cancel context.CancelFunc
	done   chan error
	url    string
}

// startDaemon runs a daemon on cfg (YAML, with a JSON exporter to a buffer
// and metrics on a free port added) and waits until it traces pid.
func startDaemon(t *testing.T, yaml string, pid int) *running {
	t.Helper()
	if !strings.Contains(yaml, "target:") {
		yaml += fmt.Sprintf("\ntarget: {pid: %d}", pid)
	}
	yaml += "\nexporters: [{json: {}}]\nmetrics: {listen: \"127.0.0.1:0\"}\npipeline: {batch_timeout: 50ms}\n"
	cfg, err := Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	r := &running{spans: &testagent.Buffer{}, logs: &testagent.Buffer{}, done: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(r.logs, testLog{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.d, err = New(cfg, Options{Logger: log, Stdout: r.spans, Rand: rand.New(rand.NewPCG(uint64(pid), 7))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.d.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	r.url = "http://" + r.d.MetricsAddr().String()
	r.waitTracing(t, pid, 30*time.Second)
	return r
}

// testLog copies the daemon's log to the test's.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitTracing waits until the daemon traces pid, or, for 0, every process
// that runs its target.binary.
func (r *running) waitTracing(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	want := fmt.Sprintf("ok: tracing PID %d\n", pid)
	deadline := time.Now().Add(timeout)
	for {
		select {
		case err := <-r.done:
			r.cancel()
			r.cancel = nil
			t.Fatalf("daemon stopped: %v", err)
		default:
		}
		if h := r.get(t, "/healthz"); h == want || pid == 0 && strings.HasPrefix(h, "ok: tracing every process that runs ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not tracing PID %d after %v: %q", pid, timeout, r.get(t, "/healthz"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *running) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(r.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return string(b)
}

// metric returns the value of one series of /metrics, -1 if absent.
func (r *running) metric(t *testing.T, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(r.get(t, "/metrics")))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return -1
}

// waitMetric polls until series satisfies ok.
func (r *running) waitMetric(t *testing.T, series string, timeout time.Duration, ok func(float64) bool) (float64, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		v := r.metric(t, series)
		if ok(v) {
			return v, time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s = %v after %v", series, v, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDetached waits until the daemon has noticed its target exit and
// flushed what it traced.
func (r *running) waitDetached(t *testing.T) {
	t.Helper()
	r.waitMetric(t, "tracer_target_attached", 30*time.Second, func(v float64) bool { return v == 0 })
}

func (r *running) stop(t *testing.T) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return 30s after cancel")
	}
}

// parseSpans returns the spans the daemon wrote of process pid, or of
// every process for 0. After its agent exits, a daemon following a PID
// attaches to the next process of that name, which may be another test
// program's.
func (r *running) parseSpans(t *testing.T, pid int) []export.JSONSpan {
	t.Helper()
	var out []export.JSONSpan
	sc := bufio.NewScanner(strings.NewReader(r.spans.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s export.JSONSpan
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("span %q: %v", sc.Text(), err)
		}
		if pid == 0 || s.PID == pid {
			out = append(out, s)
		}
	}
	return out
}

// tally counts a function's spans, completed and unfinished.
func tally(spans []export.JSONSpan, fn string, keep func(export.JSONSpan) bool) (done, unfinished int) {
	for _, s := range spans {
		if s.Function != fn || keep != nil && !keep(s) {
			continue
		}
		if s.Unfinished {
			unfinished++
		} else {
			done++
		}
	}
	return done, unfinished
}

// checkAll asserts the daemon reported every call of fn the agent made:
// completed, or unfinished because the agent was killed during it.
func checkAll(t *testing.T, spans []export.JSONSpan, fn string, agentCount uint64, keep func(export.JSONSpan) bool) {
	t.Helper()
	done, unfinished := tally(spans, fn, keep)
	if uint64(done+unfinished) != agentCount || unfinished > 2 {
		t.Errorf("%s: %d completed + %d unfinished spans, the agent made %d calls", fn, done, unfinished, agentCount)
	}
	if agentCount == 0 {
		t.Errorf("%s: the agent never called it", fn)
	}
}

func countLines(logs, substr string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// untracedRate measures how often the agent's hot loop calls lookup
// without probes.
func untracedRate(t *testing.T, bin string) float64 {
	t.Helper()
	const n = 50_000_000
	start := time.Now()
	out, err := exec.Command(bin, "-hot", strconv.Itoa(n), "-workers", "0").CombinedOutput()
	if err != nil {
		t.Fatalf("agent: %v\n%s", err, out)
	}
	return n / time.Since(start).Seconds()
}

// The governor on a real agent: lookup, called in a tight loop, costs the
// agent a CPU's worth of traps once probed; it is throttled and the
// estimate falls under the budget, while regenerateBPF keeps reporting
// every call. When the loop ends, lookup is admitted again.
func TestGovernorOnAgent(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	rate := untracedRate(t, bin)
	t.Logf("untraced: %.0f lookup calls/s", rate)
	if rate < 1e6 {
		t.Fatalf("untraced hot loop at %.0f calls/s, want well over 100k/s", rate)
	}
	// About 12 s of untraced calls: the loop is still running long after
	// the governor acted, and ends before the test does.
	hot := int(rate * 12)
	agent := testagent.Start(t, bin, "-wait-start", "-hot", strconv.Itoa(hot), "-hot-background",
		"-workers", "1", "-interval", "20ms", "-policy-depth", "2")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
  - func: "`+testagent.CTLookup+`"
governor: {budget_percent: 1, interval: 1s, window: 100ms, max_period: 20s, horizon: 5s, backoff: 5s}
`, agent.PID)
	agent.Begin(t)

	hotState := `tracer_probe_governor_state{function="` + testagent.CTLookup + `",state="throttled"}`
	_, took := r.waitMetric(t, hotState, time.Minute, func(v float64) bool { return v == 1 })
	t.Logf("lookup throttled %v after the loop started", took)
	// The hot probe at its longest period costs its rate × the trap cost
	// measured on this node × window/max_period; on a loaded node that can
	// exceed the budget, and then the governor must say so.
	budget := r.metric(t, "tracer_overhead_budget_cpus")
	est := r.metric(t, "tracer_overhead_estimated_cpus")
	overBudget := countLines(r.logs.String(), `msg="governor: over budget even with the longest period"`) > 0
	if est <= 0 || est > budget*1.001 && !overBudget {
		t.Errorf("estimated overhead %v CPUs, budget %v, and no over-budget warning", est, budget)
	}
	if n := countLines(r.logs.String(), `msg="governor: throttling probe" func=`+testagent.CTLookup); n != 1 {
		t.Errorf("%d throttling log lines for lookup, want 1", n)
	}
	// The cold probe stays admitted and attached.
	coldState := `tracer_probe_governor_state{function="` + testagent.RegenerateBPF + `",state="admitted"}`
	if v := r.metric(t, coldState); v != 1 {
		t.Errorf("%s = %v", coldState, v)
	}

	// The hot loop ends; lookup is measured quiet in a window and
	// re-admitted.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(agent.Output(), "hot calls=") {
		if time.Now().After(deadline) {
			t.Fatal("hot loop did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	admitted := `tracer_probe_governor_state{function="` + testagent.CTLookup + `",state="admitted"}`
	_, took = r.waitMetric(t, admitted, 25*time.Second, func(v float64) bool { return v == 1 })
	t.Logf("lookup re-admitted %v after the loop ended", took)
	if n := countLines(r.logs.String(), `msg="governor: re-admitting probe" func=`+testagent.CTLookup); n != 1 {
		t.Errorf("%d re-admitting log lines for lookup, want 1", n)
	}
	metrics := r.get(t, "/metrics")

	report := agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)
	spans := r.parseSpans(t, agent.PID)
	checkAll(t, spans, testagent.RegenerateBPF, report.Counts[testagent.RegenerateBPF], nil)
	done, unfinished := tally(spans, testagent.CTLookup, nil)
	t.Logf("lookup: %d spans of %d calls", done, report.Counts[testagent.CTLookup])
	if done == 0 || uint64(done) >= report.Counts[testagent.CTLookup]/100 {
		t.Errorf("lookup: %d spans of %d calls, want some, from the windows only", done, report.Counts[testagent.CTLookup])
	}
	// Switching the probe off lets calls in flight return first.
	if unfinished > 2 {
		t.Errorf("lookup: %d unfinished spans", unfinished)
	}

	for _, series := range []string{
		`tracer_probe_hits_total{function="` + testagent.CTLookup + `"}`,
		`tracer_probe_emitted_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_dropped_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_unfinished_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_untracked_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_reentered_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_contended_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_unstacked_total{function="` + testagent.RegenerateBPF + `"}`,
		`tracer_probe_attached{function="` + testagent.CTLookup + `"}`,
		`tracer_probe_hit_rate{function="` + testagent.CTLookup + `"}`,
		`tracer_probe_duty_cycle{function="` + testagent.CTLookup + `"}`,
		`tracer_probe_overhead_cpus{function="` + testagent.CTLookup + `"}`,
		`tracer_export_queue_pending`,
		`tracer_exporter_spans_total{exporter="json",outcome="exported"}`,
		`tracer_exporter_spans_total{exporter="json",outcome="failed"}`,
		`tracer_overhead_estimated_cpus`,
		`tracer_call_cost_seconds`,
		`tracer_governor_decisions_total{action="throttle"} 1`,
		`tracer_governor_decisions_total{action="readmit"} 1`,
		`tracer_target_attached 1`,
		`tracer_target_goid_known 1`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

// A reload with a changed probe list detaches the removed probe, attaches
// the new one and reconfigures the changed one in place, while the
// unchanged probe reports every call across the reload.
func TestReload(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-interval", "10ms", "-policy-depth", "2")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
  - func: "`+testagent.Upsert+`"
  - func: "`+testagent.Regenerate+`"
governor: {hit_cost: 40us, budget_percent: 50}
`, agent.PID)
	agent.Begin(t)
	time.Sleep(3 * time.Second)
	next, err := Parse("test.yaml", []byte(`
target: {pid: `+strconv.Itoa(agent.PID)+`}
probes:
  - func: "`+testagent.RegenerateBPF+`"
  - func: "`+testagent.SyncPolicyMap+`"
  - func: "`+testagent.Regenerate+`"
    min_duration: 1h
governor: {hit_cost: 40us, budget_percent: 50}
exporters: [{json: {}}]
metrics: {listen: "127.0.0.1:0"}
pipeline: {batch_timeout: 50ms}
`))
	if err != nil {
		t.Fatal(err)
	}
	reloadAt := time.Now()
	if err := r.d.Reload(next); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	time.Sleep(2 * time.Second)
	report := agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)

	spans := r.parseSpans(t, agent.PID)
	checkAll(t, spans, testagent.RegenerateBPF, report.Counts[testagent.RegenerateBPF], nil)

	before := func(s export.JSONSpan) bool { return s.Time.Before(reloaded) }
	after := func(s export.JSONSpan) bool { return s.Time.After(reloadAt) }
	if done, _ := tally(spans, testagent.Upsert, nil); done == 0 || uint64(done) >= report.Counts[testagent.Upsert] {
		t.Errorf("%s: %d spans of %d calls, want some, before the reload", testagent.Upsert, done, report.Counts[testagent.Upsert])
	}
	if done, _ := tally(spans, testagent.Upsert, func(s export.JSONSpan) bool { return !before(s) }); done > 0 {
		t.Errorf("%s: %d calls traced after it was removed", testagent.Upsert, done)
	}
	if done, _ := tally(spans, testagent.SyncPolicyMap, nil); done == 0 || uint64(done) >= report.Counts[testagent.SyncPolicyMap] {
		t.Errorf("%s: %d spans of %d calls, want some, after the reload", testagent.SyncPolicyMap, done, report.Counts[testagent.SyncPolicyMap])
	}
	if done, _ := tally(spans, testagent.SyncPolicyMap, func(s export.JSONSpan) bool { return !after(s) }); done > 0 {
		t.Errorf("%s: %d calls traced before it was added", testagent.SyncPolicyMap, done)
	}
	// regenerate's new min_duration filters every call after the reload.
	if done, _ := tally(spans, testagent.Regenerate, nil); done == 0 {
		t.Errorf("%s: no spans before the reload", testagent.Regenerate)
	}
	if done, _ := tally(spans, testagent.Regenerate, func(s export.JSONSpan) bool { return !before(s) }); done > 2 {
		t.Errorf("%s: %d spans after min_duration 1h was set", testagent.Regenerate, done)
	}
	logs := r.logs.String()
	for _, line := range []string{
		`msg="reload: probe removed" func=` + testagent.Upsert,
		`msg="reload: probe added" func=` + testagent.SyncPolicyMap,
		`msg="reload: probe reconfigured" func=` + testagent.Regenerate,
	} {
		if countLines(logs, line) != 1 {
			t.Errorf("log lacks %s", line)
		}
	}
}

// The target restarting: the daemon re-resolves it by name with backoff,
// re-attaches after the jitter and says so in one line; every call of each
// process is reported. The first restart runs the same executable (symbols
// kept), the second a stripped rebuild at the same path (symbols re-read:
// its functions are elsewhere).
func TestRestart(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	stripped := testagent.Build(t, testagent.Variant{Stripped: true})
	// A name of our own: other tests on this node run cilium-agents.
	name := fmt.Sprintf("dmn%d", rand.IntN(1e6))
	own := filepath.Join(t.TempDir(), name)
	testagent.Install(t, bin, own)
	args := []string{"-wait-start", "-workers", "1", "-interval", "10ms", "-policy-depth", "2"}
	agents := []*testagent.Agent{testagent.Start(t, own, args...)}
	r := startDaemon(t, `
target:
  process: `+name+`
  restart_backoff: {base: 100ms, max: 1s}
probes:
  - func: "`+testagent.RegenerateBPF+`"
governor: {hit_cost: 40us}
jitter: {reattach: 500ms}
`, agents[0].PID)
	agents[0].Begin(t)
	time.Sleep(2 * time.Second)
	reports := []testagent.Report{agents[0].Stop(t)}

	for i, exe := range []string{bin, stripped} {
		if exe != bin {
			testagent.Install(t, exe, own)
		}
		a := testagent.Start(t, own, args...)
		agents = append(agents, a)
		start := time.Now()
		r.waitTracing(t, a.PID, time.Minute)
		t.Logf("restart %d: re-attached %v after the restart", i+1, time.Since(start))
		a.Begin(t)
		time.Sleep(2 * time.Second)
		reports = append(reports, a.Stop(t))
	}
	r.waitDetached(t)
	if v := r.metric(t, "tracer_target_reattaches_total"); v != 2 {
		t.Errorf("tracer_target_reattaches_total = %v, want 2", v)
	}
	r.stop(t)

	logs := r.logs.String()
	for i, changed := range []bool{false, true} {
		line := fmt.Sprintf(`msg="target restarted: re-attached" old_pid=%d pid=%d binary_changed=%v`, agents[i].PID, agents[i+1].PID, changed)
		if n := countLines(logs, line); n != 1 {
			t.Errorf("%d log lines %q", n, line)
		}
	}
	if n := countLines(logs, "target restarted"); n != 2 {
		t.Errorf("%d restart log lines, want 2", n)
	}
	spans := r.parseSpans(t, 0)
	for i, a := range agents {
		checkAll(t, spans, testagent.RegenerateBPF, reports[i].Counts[testagent.RegenerateBPF], func(s export.JSONSpan) bool { return s.PID == a.PID })
	}
}

// A reload that turns stack capture on takes effect when the agent
// restarts: the first agent's calls come without stacks, the next one's
// with, and the cost of a traced call is measured again for them.
func TestReloadStacks(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	name := fmt.Sprintf("dmn%d", rand.IntN(1e6))
	own := filepath.Join(t.TempDir(), name)
	testagent.Install(t, bin, own)
	args := []string{"-wait-start", "-workers", "1", "-interval", "10ms", "-policy-depth", "0"}
	conf := func(stacks bool) string {
		return fmt.Sprintf(`
target:
  process: %s
  restart_backoff: {base: 100ms, max: 1s}
stacks: %v
probes:
  - func: "%s"
governor: {budget_percent: 100}
`, name, stacks, testagent.RegenerateBPF)
	}
	first := testagent.Start(t, own, args...)
	r := startDaemon(t, conf(false), first.PID)
	next, err := Parse("test.yaml", []byte(conf(true)+"exporters: [{json: {}}]\nmetrics: {listen: \"127.0.0.1:0\"}\npipeline: {batch_timeout: 50ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.Reload(next); err != nil {
		t.Fatal(err)
	}
	first.Begin(t)
	time.Sleep(time.Second)
	reports := []testagent.Report{first.Stop(t)}
	second := testagent.Start(t, own, args...)
	r.waitTracing(t, second.PID, time.Minute)
	second.Begin(t)
	time.Sleep(time.Second)
	reports = append(reports, second.Stop(t))
	r.waitDetached(t)
	r.stop(t)

	logs := r.logs.String()
	if n := countLines(logs, `msg="reload: change takes effect at the next attach, when the target or the daemon restarts" key=stacks`); n != 1 {
		t.Errorf("%d log lines of the deferred stacks change, want 1", n)
	}
	for _, stacks := range []bool{false, true} {
		if n := countLines(logs, fmt.Sprintf(`stacks=%v`, stacks)); n != 1 || countLines(logs, `msg="measured the cost of a traced call"`) != 2 {
			t.Errorf("the cost of a traced call was not measured once without stacks, then once with them:\n%s", logs)
			break
		}
	}
	spans := r.parseSpans(t, 0)
	for i, a := range []*testagent.Agent{first, second} {
		withStack := i == 1
		checkAll(t, spans, testagent.RegenerateBPF, reports[i].Counts[testagent.RegenerateBPF], func(s export.JSONSpan) bool {
			return s.PID == a.PID && (len(s.Stack) > 0) == withStack
		})
	}
}

// The restart backoff as configured: each wait below its window, the
// windows doubling up to max, and the waits spread within them.
func TestRestartBackoff(t *testing.T) {
	cfg, err := Parse("test.yaml", []byte("target: {restart_backoff: {base: 100ms, max: 2s}}\nprobes: [{func: f}]\nexporters: [{json: {}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Target.backoff()
	b.Rand = rand.New(rand.NewPCG(3, 4))
	for attempt, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second} {
		if w := b.Window(attempt); w != want {
			t.Errorf("attempt %d: window %v, want %v", attempt, w, want)
		}
		seen := map[time.Duration]bool{}
		var lo, hi time.Duration = want, 0
		for range 200 {
			d := b.Next(attempt)
			if d < 0 || d >= want {
				t.Fatalf("attempt %d: wait %v outside [0, %v)", attempt, d, want)
			}
			seen[d] = true
			lo, hi = min(lo, d), max(hi, d)
		}
		if len(seen) < 150 || lo > want/10 || hi < want*9/10 {
			t.Errorf("attempt %d: %d distinct waits in [%v, %v] of [0, %v): not jittered", attempt, len(seen), lo, hi, want)
		}
	}
}

// Start jitter delays the first attach by a random time within the window.
func TestStartJitter(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-workers", "1", "-interval", "50ms")
	const window = 3 * time.Second
	yaml := `
probes: [{func: "` + testagent.RegenerateBPF + `"}]
governor: {hit_cost: 40us}
jitter: {start: 3s}
`
	start := time.Now()
	r := startDaemon(t, yaml, agent.PID)
	took := time.Since(start)
	m := regexpFind(r.logs.String(), `msg="start jitter: waiting before attaching" wait=(\S+) window=3s`)
	if m == "" {
		t.Fatal("no start jitter log line")
	}
	wait, err := time.ParseDuration(m)
	if err != nil {
		t.Fatal(err)
	}
	if wait < 0 || wait >= window || took < wait {
		t.Errorf("waited %v (attached after %v), want a wait in [0, %v) before attaching", wait, took, window)
	}
}

// regexpFind returns the first submatch of expr in s, "" if none.
func regexpFind(s, expr string) string {
	m := regexp.MustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

// Calls in flight when the governor switches a probe off and still running
// after the grace period never get their return seen. They are reported
// unfinished (the probe's generation in BPF changes when it is attached
// again), never paired with a later call's return: every completed span
// lasts what the agent measured for the call it numbered.
func TestGovernorLongCalls(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-measure", "-workers", "50", "-interval", "0s",
		"-policy-depth", "10", "-policy-sleep", "10ms")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.ResolvePolicy+`"
    captures: ["`+testagent.SeqCapture+`"]
governor: {budget_percent: 2, interval: 1s, window: 200ms, max_period: 3s, hit_cost: 40us}
`, agent.PID)
	agent.Begin(t)
	state := `tracer_probe_governor_state{function="` + testagent.ResolvePolicy + `",state="throttled"}`
	r.waitMetric(t, state, 15*time.Second, func(v float64) bool { return v == 1 })
	time.Sleep(10 * time.Second)
	report := agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)

	var completed, offUnfinished, failed int
	for _, s := range r.parseSpans(t, agent.PID) {
		if s.Function != testagent.ResolvePolicy {
			continue
		}
		if s.Unfinished {
			offUnfinished++
			continue
		}
		completed++
		if _, err := report.CheckDuration(s.Function, s.Attrs["seq"], time.Duration(s.DurationNS)); err != nil && failed < 10 {
			failed++
			t.Error(err)
		}
	}
	t.Logf("%d completed calls; %d calls in flight when switched off", completed, offUnfinished)
	if completed == 0 {
		t.Error("no completed call")
	}
	if offUnfinished == 0 {
		t.Error("no call reported in flight when the probe was switched off")
	}
}

// max_events_per_second raises a probe's sampling until its spans fall
// under the cap; the spans say which sampling they were taken at.
func TestMaxEventsPerSecond(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-interval", "2ms", "-policy-depth", "0")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.Upsert+`"
    max_events_per_second: 50
governor: {budget_percent: 50, hit_cost: 40us}
`, agent.PID)
	agent.Begin(t)
	sample := `tracer_probe_sample_every{function="` + testagent.Upsert + `"}`
	r.waitMetric(t, sample, 10*time.Second, func(v float64) bool { return v > 1 })
	time.Sleep(2 * time.Second)
	from := time.Now()
	time.Sleep(3 * time.Second)
	to := time.Now()
	rate := r.metric(t, `tracer_probe_hit_rate{function="`+testagent.Upsert+`"}`)
	agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)

	var n int
	var sampled uint32
	for _, s := range r.parseSpans(t, agent.PID) {
		if s.Function == testagent.Upsert && s.Time.After(from) && s.Time.Before(to) {
			n++
			sampled = max(sampled, s.SampleRate)
		}
	}
	perSecond := float64(n) / to.Sub(from).Seconds()
	t.Logf("%.0f calls/s, %.0f spans/s, sampled 1 in %d", rate, perSecond, sampled)
	if rate < 200 {
		t.Fatalf("upsertLocked called %.0f times/s: too few to test a cap of 50", rate)
	}
	if perSecond > 2*50 || perSecond == 0 {
		t.Errorf("%.0f spans/s, cap 50/s", perSecond)
	}
	if sampled < 2 {
		t.Errorf("spans carry sample rate %d", sampled)
	}
}

// A reload that changes the exporters starts the new pipeline before it
// flushes the old one: together they hold every call.
func TestReloadExporters(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-interval", "5ms", "-policy-depth", "0")
	dir := t.TempDir()
	config := func(file string) string {
		return fmt.Sprintf(`
target: {pid: %d}
probes: [{func: %q}]
exporters: [{json: {path: %q}}]
governor: {hit_cost: 40us, budget_percent: 50}
metrics: {listen: "127.0.0.1:0"}
pipeline: {batch_timeout: 1h}
`, agent.PID, testagent.RegenerateBPF, filepath.Join(dir, file))
	}
	cfg, err := Parse("a.yaml", []byte(config("a.json")))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	r := &running{d: d, url: "http://" + d.MetricsAddr().String(), done: done, cancel: cancel}
	r.waitTracing(t, agent.PID, 30*time.Second)
	agent.Begin(t)
	time.Sleep(2 * time.Second)

	next, err := Parse("b.yaml", []byte(config("b.json")))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(next); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	report := agent.Stop(t)
	r.waitDetached(t)
	r.stop(t)

	var spans []export.JSONSpan
	for _, file := range []string{"a.json", "b.json"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			var s export.JSONSpan
			if err := json.Unmarshal(line, &s); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			spans = append(spans, s)
			n++
		}
		t.Logf("%s: %d spans", file, n)
		if n == 0 {
			t.Errorf("%s: no spans", file)
		}
	}
	checkAll(t, spans, testagent.RegenerateBPF, report.Counts[testagent.RegenerateBPF], nil)
}

// Captures in the config put the endpoint ID on each regenerateBPF span; a
// capture naming a field the receiver lacks stops the daemon from starting.
func TestDaemonCaptures(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-iterations", "5", "-interval", "2ms",
		"-policy-depth", "0", "-log-regenerations")
	r := startDaemon(t, `
probes:
  - func: "`+testagent.RegenerateBPF+`"
    captures: ["endpoint_id=e.ID"]
`, agent.PID)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	r.stop(t)

	var want, got []string
	for _, reg := range agent.Regenerations() {
		want = append(want, reg.EndpointID)
	}
	for _, s := range r.parseSpans(t, agent.PID) {
		if s.Function == testagent.RegenerateBPF {
			got = append(got, s.Attrs["endpoint_id"])
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) != 10 || !slices.Equal(got, want) {
		t.Errorf("endpoint IDs on the spans %v, the agent regenerated %v", got, want)
	}

	cfg, err := Parse("bad.yaml", []byte(fmt.Sprintf(`
target: {pid: %d}
probes:
  - func: "%s"
    captures: ["endpoint_id=e.NoSuchField"]
exporters: [{json: {}}]
metrics: {listen: "127.0.0.1:0"}
`, agent.PID, testagent.RegenerateBPF)))
	if err != nil {
		t.Fatal(err)
	}
	bad := testagent.Start(t, bin, "-workers", "1")
	cfg.Target.PID = bad.PID
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: io.Discard})
	if err == nil {
		err = d.Run(context.Background())
	}
	if err == nil || !strings.Contains(err.Error(), "probes[0].captures") || !strings.Contains(err.Error(), "ID") {
		t.Errorf("a capture of a missing field: %v, want an error naming the key and the fields that exist", err)
	}
}

// A preset probe traces the functions of the preset the stand-in agent
// has, with the preset's captures from DWARF and the probe's own filters,
// and logs the release it used and each function it could not find.
func TestDaemonPreset(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "2", "-iterations", "5", "-interval", "2ms",
		"-policy-depth", "0", "-log-regenerations")
	r := startDaemon(t, `
target: {pid: `+strconv.Itoa(agent.PID)+`, cilium_version: v1.18.5}
probes:
  - preset: endpoint-regeneration
    sample: 1
# The stand-in's loader.compile runs about 12,000 times a second: under
# the default budget the governor would throttle the preset's probes.
governor: {budget_percent: 100}
`, agent.PID)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	r.stop(t)

	logs := r.logs.String()
	if !strings.Contains(logs, `msg=preset preset=endpoint-regeneration cilium="cilium v1.18.5 (set by the user)" functions=5 captures=11`) {
		t.Errorf("no log line of what the preset traces:\n%s", logs)
	}
	if n := strings.Count(logs, "is not in the binary"); n != len(mustPreset(t, "endpoint-regeneration").For("1.18"))-5 {
		t.Errorf("%d functions logged missing", n)
	}
	var want, got []string
	for _, reg := range agent.Regenerations() {
		want = append(want, reg.EndpointID)
	}
	for _, s := range r.parseSpans(t, agent.PID) {
		if s.Function == testagent.RegenerateBPF {
			got = append(got, s.Attrs["endpoint_id"])
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) != 10 || !slices.Equal(got, want) {
		t.Errorf("endpoint IDs on the spans %v, the agent regenerated %v", got, want)
	}
}

func mustPreset(t *testing.T, name string) *presets.Preset {
	t.Helper()
	p, err := presets.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A stripped agent of a Go release the tracer does not know: one warning,
// tracer_target_goid_known 0 and spans without a goroutine; with the
// offsets file made from its unstripped build: 1, and goroutine IDs.
func TestDaemonGoidUnknown(t *testing.T) {
	future := testagent.FutureGoVersion()
	stripped := testagent.WithGoVersion(t, testagent.Build(t, testagent.Variant{Stripped: true}), future)
	f, err := symbols.Open(testagent.WithGoVersion(t, testagent.Build(t, testagent.Variant{}), future))
	if err != nil {
		t.Fatal(err)
	}
	o, err := offsets.New(f, nil, nil)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	offsets := filepath.Join(t.TempDir(), "offsets.json")
	out, err := os.Create(offsets)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Write(out); err != nil {
		t.Fatal(err)
	}
	out.Close()

	for _, withFile := range []bool{false, true} {
		agent := testagent.Start(t, stripped, "-wait-start", "-workers", "2", "-iterations", "5", "-interval", "2ms", "-policy-depth", "0")
		yaml := "probes: [{func: \"" + testagent.RegenerateBPF + "\"}]\n"
		if withFile {
			yaml += "offsets: " + offsets + "\n"
		}
		r := startDaemon(t, yaml, agent.PID)
		if v := r.metric(t, "tracer_target_goid_known"); v != b2f(withFile) {
			t.Errorf("offsets file %v: tracer_target_goid_known %v", withFile, v)
		}
		agent.Begin(t)
		report := agent.Wait(t, 30*time.Second)
		r.waitDetached(t)
		r.stop(t)
		if n := countLines(r.logs.String(), `msg="goroutine IDs unknown"`); n != 1-int(b2f(withFile)) {
			t.Errorf("offsets file %v: %d warnings", withFile, n)
		}
		spans := r.parseSpans(t, agent.PID)
		if uint64(len(spans)) != report.Counts[testagent.RegenerateBPF] {
			t.Errorf("offsets file %v: %d spans, the agent counted %d calls", withFile, len(spans), report.Counts[testagent.RegenerateBPF])
		}
		for _, s := range spans {
			// Goroutine IDs here are small; g addresses far larger.
			if withFile && (s.Goroutine == 0 || s.Goroutine >= 1<<20) || !withFile && s.Goroutine != 0 {
				t.Fatalf("offsets file %v: span on goroutine %#x", withFile, s.Goroutine)
			}
		}
	}
}

// target.binary alone traces every process that runs the file, started
// after the daemon: each span names its process, with as many calls as it
// counted itself.
func TestDaemonEveryProcess(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true, PIE: true})
	r := startDaemon(t, fmt.Sprintf("target: {binary: %q}\nprobes:\n  - func: %q\n", bin, testagent.ResolvePolicy), 0)
	want := map[int]uint64{}
	for range 2 {
		a := testagent.Start(t, bin, "-workers", "2", "-iterations", "3", "-interval", "1ms", "-policy-depth", "2", "-panic-every", "0")
		want[a.PID] = a.Wait(t, time.Minute).Counts[testagent.ResolvePolicy]
	}
	for pid, n := range want {
		// The spans reach the exporter in batches: wait for them.
		deadline := time.Now().Add(30 * time.Second)
		for {
			done, unfinished := tally(r.parseSpans(t, pid), testagent.ResolvePolicy, nil)
			if uint64(done) == n && unfinished == 0 && n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d: %d completed + %d unfinished spans, the process made %d calls", pid, done, unfinished, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	r.stop(t)
	if n := len(r.parseSpans(t, 0)); uint64(n) != sum(want) {
		t.Errorf("%d spans, the processes made %d calls", n, sum(want))
	}
}

func sum(m map[int]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// breakdown: true samples each call's goroutine: the spans say where the
// time went, mostly waiting at the agent's waiting functions.
func TestDaemonBreakdown(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-phased", "2", "-phase-exec", "30ms", "-phase-bpf-insns", "20000")
	r := startDaemon(t, fmt.Sprintf("syscalls: true\nprobes:\n  - func: %q\n    breakdown: true\n", testagent.Phased), agent.PID)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	r.waitDetached(t)
	r.stop(t)
	spans := r.parseSpans(t, agent.PID)
	want := agent.Phased(t)
	if len(spans) != 2 || len(want) != 2 {
		t.Fatalf("%d spans, the agent made %d calls (want 2)", len(spans), len(want))
	}
	for i, s := range spans {
		b := s.Breakdown
		if b == nil || b.Samples < 10 || b.BlockedNS["mutex"] == 0 || b.SyscallNS == 0 || len(b.Where) == 0 {
			t.Errorf("span %s: breakdown %+v", s.SpanID, b)
		}
		// With syscalls: true, the child process and the program load
		// are child spans, each as long as the agent measured it.
		got := map[string]time.Duration{}
		for _, sc := range s.Syscalls {
			switch {
			case sc.Child:
				got["exec"] += time.Duration(sc.DurationNS)
			case sc.Name == "bpf BPF_PROG_LOAD":
				got["bpf"] += time.Duration(sc.DurationNS)
			}
		}
		for _, part := range []string{"exec", "bpf"} {
			if lo, hi := testagent.PhaseBounds(want[i], part); got[part] < lo || got[part] > hi {
				t.Errorf("span %s: %s %v in its child spans, the agent measured %v (want %v to %v)", s.SpanID, part, got[part], want[i][part], lo, hi)
			}
		}
	}
}

// With syscalls: true the daemon counts what the syscall programs cost the
// node: n getppid(2) of this test, a process it does not trace, add at
// least 2n runs at the cost it measured to tracer_overhead_node. The
// node's other system calls add far less meanwhile: an account that
// missed the test's would not get there.
func TestDaemonSyscallCost(t *testing.T) {
	const n = 1_000_000
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "0", "-phased", "1")
	r := startDaemon(t, fmt.Sprintf("syscalls: true\nprobes:\n  - func: %q\n", testagent.Phased), agent.PID)
	cost := r.metric(t, "tracer_syscall_run_cost_seconds")
	if cost <= 0 {
		t.Fatalf("tracer_syscall_run_cost_seconds %v", cost)
	}
	before := r.metric(t, "tracer_overhead_node_seconds_total")
	for range n {
		unix.Getppid()
	}
	want := before + 2*n*cost
	got, _ := r.waitMetric(t, "tracer_overhead_node_seconds_total", 20*time.Second, func(v float64) bool { return v >= want })
	t.Logf("%v per run: %d getppid add %.4f CPU seconds; the account added %.4f", time.Duration(cost*1e9), n, 2*n*cost, got-before)
	if v := r.metric(t, "tracer_overhead_node_cpus"); v <= 0 {
		t.Errorf("tracer_overhead_node_cpus %v", v)
	}
}
