package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/maps/ctmap"
)

const (
	fnRegenerate    = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
	fnRegenerateBPF = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	fnSync          = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump"
	fnResolve       = "github.com/cilium/cilium/pkg/policy.(*Repository).resolvePolicyLocked"
	fnUpsert        = "github.com/cilium/cilium/pkg/ipcache.(*IPCache).upsertLocked"
	fnAllocate      = "github.com/cilium/cilium/pkg/identity/cache.(*CachingIdentityAllocator).AllocateIdentity"
	fnCompile       = "github.com/cilium/cilium/pkg/datapath/loader.(*loader).compileAndLoad"
	fnDump          = "github.com/cilium/cilium/pkg/maps/policymap.(*PolicyMap).DumpToSlice"
	fnLookup        = "github.com/cilium/cilium/pkg/maps/ctmap.(*Map).lookup"
)

// agentBinary is built once by TestMain.
var agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cilium-agent-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary = filepath.Join(dir, "cilium-agent")
	build := exec.Command("go", "build", "-o", agentBinary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// expectedCounts is the README's formula.
func expectedCounts(workers, iterations, depth, hot int, panicEvery uint64) (calls, panics map[string]uint64) {
	r := uint64(workers * iterations)
	calls = map[string]uint64{
		fnRegenerate:    r,
		fnRegenerateBPF: r,
		fnSync:          r,
		fnResolve:       r * uint64(depth),
		fnUpsert:        4 * r,
		fnAllocate:      r,
		fnCompile:       r,
		fnDump:          r,
		fnLookup:        uint64(hot),
	}
	panics = make(map[string]uint64, len(calls))
	for fn := range calls {
		panics[fn] = 0
	}
	if panicEvery > 0 {
		panics[fnAllocate] = r / panicEvery
	}
	return calls, panics
}

func TestRunCounts(t *testing.T) {
	cfg := config{workers: 5, iterations: 7, policyDepth: 3, panicEvery: 4, hot: 1000}
	before := groundtruth.Snapshot(0)
	run(cfg, &printer{w: io.Discard})
	after := groundtruth.Snapshot(0)

	calls, panics := expectedCounts(5, 7, 3, 1000, 4)
	if len(after.Counts) != len(calls) {
		t.Fatalf("counted functions %v, want %v", groundtruth.Names(), calls)
	}
	for fn, want := range calls {
		if got := after.Counts[fn] - before.Counts[fn]; got != want {
			t.Errorf("%s: %d calls, want %d", fn, got, want)
		}
		if got := after.Panics[fn] - before.Panics[fn]; got != panics[fn] {
			t.Errorf("%s: %d panics, want %d", fn, got, panics[fn])
		}
	}
}

var regeneratedLine = regexp.MustCompile(`^regenerated endpoint_id=(\d+) k8s_pod_name=xwing-(\d+) policy_revision=(\d+)$`)

func TestBinaryReport(t *testing.T) {
	const workers, iterations, depth, hot, panicEvery = 3, 5, 4, 5000, 3
	cmd := exec.Command(agentBinary,
		"-workers", fmt.Sprint(workers), "-iterations", fmt.Sprint(iterations),
		"-interval", "0", "-bpf-sleep", "1ms", "-policy-depth", fmt.Sprint(depth),
		"-policy-sleep", "100us", "-panic-every", fmt.Sprint(panicEvery),
		"-hot", fmt.Sprint(hot), "-log-regenerations")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", cmd, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if want := fmt.Sprintf("ready pid=%d", cmd.Process.Pid); lines[0] != want {
		t.Fatalf("first line %q, want %q", lines[0], want)
	}

	wantSum := ctmap.NewMap().Scan(hot)
	if want := fmt.Sprintf("hot calls=%d checksum=%d", hot, wantSum); lines[1] != want {
		t.Fatalf("second line %q, want %q", lines[1], want)
	}

	perEndpoint := make(map[string]int)
	revisions := make(map[string]bool)
	for _, l := range lines[2 : len(lines)-1] {
		m := regeneratedLine.FindStringSubmatch(l)
		if m == nil || m[1] != m[2] {
			t.Fatalf("unexpected line %q", l)
		}
		perEndpoint[m[1]]++
		if revisions[m[3]] {
			t.Errorf("policy revision %s realized twice", m[3])
		}
		revisions[m[3]] = true
	}
	for w := 0; w < workers; w++ {
		for j := 0; j < endpointsPerWorker; j++ {
			id := fmt.Sprint(firstEndpointID + endpointsPerWorker*w + j)
			// Worker w regenerates its endpoints in turn.
			want := iterations / endpointsPerWorker
			if j < iterations%endpointsPerWorker {
				want++
			}
			if perEndpoint[id] != want {
				t.Errorf("endpoint %s regenerated %d times, want %d", id, perEndpoint[id], want)
			}
		}
	}

	var report groundtruth.Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &report); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if report.Checksum != wantSum {
		t.Errorf("checksum %d, want %d", report.Checksum, wantSum)
	}
	calls, panics := expectedCounts(workers, iterations, depth, hot, panicEvery)
	for fn, want := range calls {
		if report.Counts[fn] != want {
			t.Errorf("%s: %d calls, want %d", fn, report.Counts[fn], want)
		}
		if report.Panics[fn] != panics[fn] {
			t.Errorf("%s: %d panics, want %d", fn, report.Panics[fn], panics[fn])
		}
	}
	if len(report.Counts) != len(calls) || len(report.Panics) != len(calls) {
		t.Errorf("report has %d counts and %d panics, want %d each", len(report.Counts), len(report.Panics), len(calls))
	}
}

func TestSignals(t *testing.T) {
	cmd := exec.Command(agentBinary, "-workers", "2", "-interval", "1ms", "-policy-depth", "2")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("agent closed its stdout")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no line from the agent in 10s")
		}
		return ""
	}
	if l := next(); !strings.HasPrefix(l, "ready pid=") {
		t.Fatalf("first line %q, want ready", l)
	}

	var first groundtruth.Report
	for first.Counts[fnRegenerate] == 0 {
		time.Sleep(50 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(next()), &first); err != nil {
			t.Fatal(err)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var final groundtruth.Report
	if err := json.Unmarshal([]byte(next()), &final); err != nil {
		t.Fatal(err)
	}
	if final.Counts[fnRegenerate] < first.Counts[fnRegenerate] {
		t.Errorf("final report has %d regenerations, fewer than the earlier %d", final.Counts[fnRegenerate], first.Counts[fnRegenerate])
	}
	if l, ok := <-lines; ok {
		t.Errorf("line %q after the final report", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// TestSymbols checks that every counted function is a function symbol of
// the binary under exactly the name the report uses.
func TestSymbols(t *testing.T) {
	out, err := exec.Command("go", "tool", "nm", agentBinary).Output()
	if err != nil {
		t.Fatal(err)
	}
	text := make(map[string]bool)
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "T" {
			text[strings.Join(f[2:], " ")] = true
		}
	}
	for _, fn := range groundtruth.Names() {
		if !text[fn] {
			t.Errorf("%s is not a function symbol of the binary", fn)
		}
	}
}

// TestInlining checks that the compiler inlines realizeBPFState into
// regenerate, so the call to regenerateBPF carries an inlined frame, and
// inlines none of the counted functions.
func TestInlining(t *testing.T) {
	out, err := exec.Command("go", "build", "-o", os.DevNull, "-gcflags=github.com/cilium/cilium/...=-m", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("inlining call to (*Endpoint).realizeBPFState")) {
		t.Errorf("realizeBPFState is not inlined:\n%s", out)
	}
	for _, fn := range groundtruth.Names() {
		short := fn[strings.LastIndex(fn, "/")+1:]
		short = short[strings.Index(short, ".")+1:]
		if bytes.Contains(out, []byte("inlining call to "+short)) {
			t.Errorf("%s is inlined somewhere", fn)
		}
	}

	// The return address regenerateBPF's entry sees must map to the line
	// of the inlined realizeBPFState that calls it.
	src, err := os.ReadFile("../pkg/endpoint/policy.go")
	if err != nil {
		t.Fatal(err)
	}
	line := 1 + bytes.Count(src[:bytes.Index(src, []byte("e.policyRevision, ctx.bpfErr = e.regenerateBPF(ctx)"))], []byte("\n"))
	dis, err := exec.Command("go", "tool", "objdump", "-s", `endpoint\.\(\*Endpoint\)\.regenerate$`, agentBinary).Output()
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`(?m)^\s+(\S+)\s.*CALL `+regexp.QuoteMeta(fnRegenerateBPF)+`\(SB\)`).FindAllSubmatch(dis, -1)
	if len(calls) != 1 || string(calls[0][1]) != fmt.Sprintf("policy.go:%d", line) {
		t.Errorf("calls to regenerateBPF in regenerate: %q, want one at policy.go:%d", calls, line)
	}
}

// With -measure the report has the durations of every call of the measured
// functions that returned, each under its own sequence number; without it,
// none.
func TestMeasure(t *testing.T) {
	const workers, iterations, depth, panicEvery = 3, 4, 3, 3
	const levelSleep, compileSleep = 200 * time.Microsecond, 300 * time.Microsecond
	args := []string{"-workers", fmt.Sprint(workers), "-iterations", fmt.Sprint(iterations), "-interval", "0",
		"-policy-depth", fmt.Sprint(depth), "-policy-sleep", levelSleep.String(),
		"-compile-sleep", compileSleep.String(), "-panic-every", fmt.Sprint(panicEvery)}
	report := func(args ...string) (r groundtruth.Report, line string) {
		out, err := exec.Command(agentBinary, args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		line = lines[len(lines)-1]
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("last line %q: %v", line, err)
		}
		return r, line
	}

	r, _ := report(append(args, "-measure")...)
	// Each measured call sleeps at least its own sleep, on its own clock.
	least := map[string]time.Duration{fnResolve: levelSleep, fnCompile: compileSleep, fnAllocate: 0}
	if len(r.Durations) != len(least) {
		t.Errorf("durations of %d functions, want %d", len(r.Durations), len(least))
	}
	seqs := map[uint64]string{}
	for fn, min := range least {
		ds := r.Durations[fn]
		if want := r.Counts[fn] - r.Panics[fn]; uint64(len(ds)) != want || want == 0 {
			t.Errorf("%s: %d durations, %d calls returned", fn, len(ds), want)
		}
		for seq, d := range ds {
			if other, dup := seqs[seq]; dup {
				t.Errorf("sequence number %d measured for %s and %s", seq, fn, other)
			}
			seqs[seq] = fn
			// The caller's view of the call encloses the body.
			if body, call := time.Duration(d[0]), time.Duration(d[1]); body < min || call < body {
				t.Errorf("%s call %d: body %v, call %v; want body >= its %v sleep, call >= body", fn, seq, body, call, min)
			}
		}
	}

	if _, line := report(args...); strings.Contains(line, "durations_ns") {
		t.Errorf("durations without -measure: %s", line)
	}
}
