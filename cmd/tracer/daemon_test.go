package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

// A bad configuration stops the daemon before it does anything, with one
// line naming the file, the line and the key.
func TestDaemonBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"probes: [{func: f}]\nexporters: [{json: {}}]\nsampling: 3\n", "bad.yaml:3: sampling: unknown key"},
		{"probes: [{func: f, min_duration: 10 ms}]\nexporters: [{json: {}}]\n", `bad.yaml:1: probes[0].min_duration: invalid duration "10 ms"`},
		{"probes: [{func: f}]\nexporters:\n  - kafka: {}\n", "bad.yaml:3: exporters[0].kafka: unknown key"},
	} {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		r := tracer(t, nil, "daemon", "--config", path)
		mustFail(t, r, tc.want)
		if !strings.Contains(r.stderr, filepath.Join(dir, tc.want)) {
			t.Errorf("stderr %q, want %q", r.stderr, tc.want)
		}
	}
	mustFail(t, tracer(t, nil, "daemon"), `"config" not set`)
}

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, buf *lockedBuffer, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(buf.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %v in:\n%s", substr, timeout, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SIGHUP reloads the file: the probe list changes in place. SIGTERM
// flushes the spans held in the export queue and detaches; the daemon exits
// 0.
func TestDaemonSignals(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "1", "-interval", "10ms", "-policy-depth", "2")
	dir := t.TempDir()
	spansPath := filepath.Join(dir, "spans.json")
	config := func(probes ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "target: {pid: %d}\nprobes:\n", agent.PID)
		for _, p := range probes {
			fmt.Fprintf(&b, "  - func: %q\n", "github.com/cilium/cilium/pkg/"+p)
		}
		// Spans stay queued until shutdown: only SIGTERM's flush writes them.
		fmt.Fprintf(&b, "exporters: [{json: {path: %q}}]\n", spansPath)
		b.WriteString("pipeline: {queue_size: 200000, batch_size: 200000, batch_timeout: 1h}\n")
		b.WriteString("governor: {hit_cost: 40us, budget_percent: 50}\nmetrics: {listen: none}\n")
		return b.String()
	}
	cfgPath := filepath.Join(dir, "daemon.yaml")
	if err := os.WriteFile(cfgPath, []byte(config("endpoint.(*Endpoint).regenerateBPF", "ipcache.(*IPCache).upsertLocked")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tracerBin, "daemon", "--config", cfgPath)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	waitFor(t, stderr, "msg=tracing", 30*time.Second)
	// The log says how the probes run.
	feats := kernel.Probe()
	if mode, err := feats.Mode(); err != nil || !strings.Contains(stderr.String(), "mode="+strconv.Quote(feats.Describe(mode))) {
		t.Errorf("the tracing line does not name the mode %v (%v): %s", mode, err, stderr.String())
	}
	agent.Begin(t)
	time.Sleep(3 * time.Second)

	if err := os.WriteFile(cfgPath, []byte(config("endpoint.(*Endpoint).regenerateBPF", "endpoint.(*Endpoint).syncPolicyMapWithDump")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, stderr, `msg="configuration reloaded"`, 10*time.Second)
	for _, line := range []string{"reload: probe removed", "reload: probe added"} {
		if !strings.Contains(stderr.String(), line) {
			t.Errorf("no %q in the log", line)
		}
	}
	time.Sleep(2 * time.Second)
	if fi, err := os.Stat(spansPath); err != nil || fi.Size() != 0 {
		t.Fatalf("spans written before SIGTERM: %v %v", fi, err)
	}

	// The agent's counts just before SIGTERM: every one of those calls
	// must be in the flushed spans.
	before := agent.Report(t)

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("daemon: %v\n%s", waitErr, stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon still running 30s after SIGTERM")
	}
	report := agent.Stop(t)

	f, err := os.Open(spansPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s struct{ Function string }
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		counts[s.Function]++
	}
	for _, fn := range []string{"endpoint.(*Endpoint).regenerateBPF", "ipcache.(*IPCache).upsertLocked", "endpoint.(*Endpoint).syncPolicyMapWithDump"} {
		full := "github.com/cilium/cilium/pkg/" + fn
		got, made := counts[full], int(report.Counts[full])
		t.Logf("%s: %d spans, %d calls", fn, got, made)
		if got == 0 || got > made {
			t.Errorf("%s: %d spans of %d calls", fn, got, made)
		}
	}
	// Traced from the agent's start to SIGTERM, every call.
	full := "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	if got, made := counts[full], int(before.Counts[full]); got < made {
		t.Errorf("regenerateBPF: %d spans, the agent had made %d calls before SIGTERM", got, made)
	}
}
