package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

const captureFunc = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"

var captureFlags = []string{
	"--capture", "endpoint_id=e.ID",
	"--capture", "pod=e.K8sPodName",
	"--capture", "policy_revision=e.desiredPolicy.Revision",
}

// The workflow for a release (stripped) binary: `tracer offsets` on the
// unstripped build of the same code, `tracer trace --offsets` on the
// stripped one; the spans carry what the agent logs.
func TestCaptureStripped(t *testing.T) {
	unstripped := testagent.Build(t, testagent.Variant{})
	stripped := testagent.Build(t, testagent.Variant{Stripped: true})
	offsets := filepath.Join(t.TempDir(), "offsets.json")
	r := tracer(t, nil, append([]string{"offsets", "--binary", unstripped, "--func", captureFunc, "-o", offsets}, captureFlags...)...)
	if r.code != 0 {
		t.Fatalf("tracer offsets: %s", r.stderr)
	}

	agent := testagent.Start(t, stripped, "-wait-start", "-workers", "4", "-iterations", "5",
		"-interval", "2ms", "-log-regenerations")
	// With only --offsets, everything the file lists is captured.
	tr := startTracer(t, nil, "trace", "--pid", strconv.Itoa(agent.PID), "--func", captureFunc,
		"--offsets", offsets, "--output", "json", "--follow=false")
	tr.waitFor(t, "tracing 1 functions", time.Minute)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	tr.wait(t, 30*time.Second)

	var want, got []string
	for _, reg := range agent.Regenerations() {
		want = append(want, reg.EndpointID+" "+reg.Pod+" "+reg.PolicyRevision)
	}
	for _, l := range strings.Split(tr.stdout.String(), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var span struct {
			Function string            `json:"function"`
			Attrs    map[string]string `json:"attrs"`
		}
		if err := json.Unmarshal([]byte(l), &span); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", span.Attrs["endpoint_id"], span.Attrs["pod"], span.Attrs["policy_revision"]))
	}
	sort.Strings(want)
	sort.Strings(got)
	if len(want) != 20 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("span attributes:\n%s\nagent logged:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCaptureBadInput(t *testing.T) {
	unstripped := testagent.Build(t, testagent.Variant{})
	stripped := testagent.Build(t, testagent.Variant{Stripped: true})
	other := testagent.Build(t, testagent.Variant{Toolchain: "go1.22.12"})
	dir := t.TempDir()
	otherOffsets := filepath.Join(dir, "other.json")
	if r := tracer(t, nil, "offsets", "--binary", other, "--func", captureFunc, "--capture", "id=e.ID", "-o", otherOffsets); r.code != 0 {
		t.Fatalf("tracer offsets: %s", r.stderr)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"fingerprint": 3}`), 0o644)

	agent := testagent.Start(t, stripped, "-workers", "1", "-interval", "10ms")
	pid := strconv.Itoa(agent.PID)
	trace := []string{"trace", "--pid", pid, "--func", captureFunc}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"offsets of another build", slices.Concat(trace, []string{"--offsets", otherOffsets}), "offsets file is for a different build"},
		{"stripped without offsets", slices.Concat(trace, []string{"--capture", "id=e.ID"}), "no DWARF"},
		{"missing offsets file", slices.Concat(trace, []string{"--offsets", filepath.Join(dir, "nope")}), "no such file"},
		{"malformed offsets file", slices.Concat(trace, []string{"--offsets", bad}), bad},
		{"bad raw type", slices.Concat(trace, []string{"--capture", "id=arg0+16:u12"}), `unknown type "u12"`},
		{"no NAME=", slices.Concat(trace, []string{"--capture", "e.ID"}), "want NAME=EXPR"},
		{"missing argument", []string{"offsets", "--binary", unstripped, "--func", captureFunc, "--capture", "id=ep.ID"}, "(available: e, ctx)"},
		{"missing field", []string{"offsets", "--binary", unstripped, "--func", captureFunc, "--capture", "id=e.Id"}, "(available: mutex, owner, ID, K8sPodName"},
		{"offsets of a stripped binary", []string{"offsets", "--binary", stripped, "--func", captureFunc, "--capture", "id=e.ID"}, "no DWARF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, tracer(t, nil, tc.args...), tc.want)
		})
	}
	if r := agent.Stop(t); r.Counts[captureFunc] == 0 {
		t.Errorf("agent stopped regenerating: %+v", r)
	}
}
