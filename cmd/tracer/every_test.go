package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// everyArgs is a short workload: each run is a process of its own.
var everyArgs = []string{"-workers", "2", "-iterations", "3", "-interval", "1ms", "-policy-depth", "2", "-panic-every", "0"}

// trace --binary traces every process that runs the file, started after
// the tracer: each call line names its process, the summary counts every
// process's calls, as many as they counted themselves, and lists the
// processes, and --by-process gives each its own summary.
func TestTraceEveryProcess(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	r := startTracer(t, nil, "trace", "--binary", bin, "--func", testagent.ResolvePolicy, "--func", testagent.Regenerate, "--by-process")
	r.waitFor(t, "tracing 2 functions in every process that runs "+bin, time.Minute)
	want := map[string]uint64{}
	var pids []int
	for range 3 {
		a := testagent.Start(t, bin, everyArgs...)
		rep := a.Wait(t, time.Minute)
		pids = append(pids, a.PID)
		for _, fn := range []string{testagent.ResolvePolicy, testagent.Regenerate} {
			want[fn] += rep.Counts[fn]
		}
	}
	r.stop(t)
	out := r.stdout.String()

	for _, pid := range pids {
		line := regexp.MustCompile(`(?m)^\S+\s+\S+ g=\S+\s+pid=` + strconv.Itoa(pid) + ` +\S+`)
		if !line.MatchString(out) {
			t.Errorf("no call line names pid %d:\n%s", pid, out)
		}
		row := regexp.MustCompile(`(?m)^` + strconv.Itoa(pid) + `\s+(cilium-agent|\?)`)
		if !row.MatchString(out) {
			t.Errorf("pid %d not in the processes that ran:\n%s", pid, out)
		}
		if !strings.Contains(out, "pid "+strconv.Itoa(pid)) {
			t.Errorf("no summary of pid %d", pid)
		}
	}
	if !strings.Contains(out, "3 processes ran the traced executable") {
		t.Errorf("the summary does not count 3 processes:\n%s", out)
	}
	for fn, n := range want {
		// The first table is the summary of all processes.
		row := regexp.MustCompile(`(?m)^\s*(\d+)\s.*` + regexp.QuoteMeta(fn) + `$`).FindStringSubmatch(out)
		if row == nil || row[1] != strconv.FormatUint(n, 10) || n == 0 {
			t.Errorf("%s: summary row %q, the processes counted %d calls", fn, row, n)
		}
	}
}

// --container NAME --binary PATH traces PATH inside the container: a short
// program docker exec runs there, here a copy of the agent as cilium-cni,
// and not the container's own agent, another file.
func TestTraceEveryProcessInContainer(t *testing.T) {
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Fatalf("this test needs a running Docker engine: %v: %s", err, out)
	}
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	ctx := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cilium-agent", "cilium-cni"} {
		if err := os.WriteFile(filepath.Join(ctx, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	df := "FROM scratch\nCOPY cilium-agent /usr/bin/cilium-agent\nCOPY cilium-cni /usr/bin/cilium-cni\nENTRYPOINT [\"/usr/bin/cilium-agent\"]\n"
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "tracer-test/cilium-cni:" + strconv.Itoa(os.Getpid())
	docker(t, "build", "-q", "-t", tag, ctx)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	runAgentContainer(t, tag, "-workers", "2", "-interval", "10ms")

	r := startTracer(t, nil, "trace", "--container", "cilium-agent", "--binary", "/usr/bin/cilium-cni", "--func", testagent.ResolvePolicy, "--output", "json")
	r.waitFor(t, "cilium-cni", time.Minute)
	var want uint64
	for range 2 {
		out := docker(t, append([]string{"exec", "cilium-agent", "/usr/bin/cilium-cni"}, everyArgs...)...)
		lines := strings.Split(out, "\n")
		want += reportOf(t, lines[len(lines)-1]).Counts[testagent.ResolvePolicy]
	}
	r.stop(t)
	agentPID, err := strconv.Atoi(docker(t, "inspect", "-f", "{{.State.Pid}}", "cilium-agent"))
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	pids := map[int]bool{}
	for _, c := range parseCalls(t, r.stdout.String()) {
		if c.PID == agentPID {
			t.Fatalf("a call of the container's agent, pid %d, another file, was traced", agentPID)
		}
		if !c.Unfinished {
			got++
		}
		pids[c.PID] = true
	}
	if got != want || want == 0 || len(pids) != 2 {
		t.Errorf("traced %d calls in %d processes, the two cilium-cni runs counted %d", got, len(pids), want)
	}
}

// reportOf parses the agent's report, the JSON line it prints at exit.
func reportOf(t *testing.T, line string) testagent.Report {
	t.Helper()
	var r testagent.Report
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("agent report %q: %v", line, err)
	}
	return r
}

// --entry-only counts the calls of every process running a PIE, each
// loaded elsewhere, with stacks symbolized all the same.
func TestEntryOnlyEveryProcess(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true, PIE: true})
	r := startTracer(t, nil, "trace", "--binary", bin, "--entry-only", "--func", testagent.RegenerateBPF)
	r.waitFor(t, "in every process that runs", time.Minute)
	var want uint64
	for range 2 {
		a := testagent.Start(t, bin, everyArgs...)
		want += a.Wait(t, time.Minute).Counts[testagent.RegenerateBPF]
	}
	r.stop(t)
	out := r.stdout.String()
	var total uint64
	for _, l := range strings.Split(out, "\n") {
		if n, f, ok := strings.Cut(l, " calls of "); ok && f == testagent.RegenerateBPF {
			c, err := strconv.ParseUint(n, 10, 64)
			if err != nil {
				t.Fatalf("bad count line %q", l)
			}
			total += c
		}
	}
	if total != want || want == 0 {
		t.Errorf("entry-only counted %d calls in all processes, they made %d:\n%s", total, want, out)
	}
	if !regexp.MustCompile(`(?m)^    \S+\.\(\*Endpoint\)\.regenerate$`).MatchString(out) {
		t.Errorf("the stacks are not symbolized:\n%s", out)
	}
}
