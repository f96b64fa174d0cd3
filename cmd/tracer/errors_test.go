package main_test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// tracer trace --capture-return and the errors regenerateBPF returns, in
// the JSON spans and the summary: on the unstripped build from DWARF, on
// the stripped one from the offsets file of its unstripped twin, which
// carries the results and the error result, and from the raw form alone
// (argN+OFFSET:TYPE, retN:TYPE, retN:error), as the presets' catalogue
// gives them.
func TestErrorReturnsCLI(t *testing.T) {
	offsets := filepath.Join(t.TempDir(), "offsets.json")
	if r := tracer(t, nil, "offsets", "--binary", testagent.Build(t, testagent.Variant{}), "--func", captureFunc,
		"--capture", testagent.ResultCaptures[0], "--capture-return", testagent.ResultCaptures[1], "-o", offsets); r.code != 0 {
		t.Fatalf("tracer offsets: %s", r.stderr)
	}
	for _, tc := range []struct {
		v    testagent.Variant
		args []string
	}{
		{testagent.Variant{}, []string{"--capture", testagent.ResultCaptures[0], "--capture-return", testagent.ResultCaptures[1]}},
		{testagent.Variant{Stripped: true}, []string{"--offsets", offsets}},
		{testagent.Variant{Stripped: true}, []string{"--capture", "seq=arg1+8:u64", "--capture-return", "rev=ret0:u64", "--capture-return", "failed=ret1:error"}},
	} {
		t.Run(tc.v.String()+" "+tc.args[0], func(t *testing.T) {
			agent := testagent.Start(t, testagent.Build(t, tc.v), "-wait-start", "-workers", "4", "-iterations", "6",
				"-interval", "2ms", "-policy-depth", "1", "-fail-every", "2", "-log-bpf")
			tr := startTracer(t, nil, append([]string{"trace", "--pid", strconv.Itoa(agent.PID), "--func", captureFunc,
				"--output", "json", "--follow=false"}, tc.args...)...)
			tr.waitFor(t, "tracing 1 functions", time.Minute)
			agent.Begin(t)
			agent.Wait(t, 30*time.Second)
			tr.wait(t, 30*time.Second)

			var want, got []string
			failed := 0
			for _, c := range agent.BPFCalls(t) {
				if c.ErrType != "" {
					failed++
				}
				want = append(want, c.Want())
			}
			for _, l := range strings.Split(tr.stdout.String(), "\n") {
				if !strings.HasPrefix(l, "{") {
					continue
				}
				var span struct {
					Attrs map[string]string `json:"attrs"`
					Error *struct {
						Type    string `json:"type"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(l), &span); err != nil {
					t.Fatalf("bad JSON line %q: %v", l, err)
				}
				var typ, msg string
				if e := span.Error; e != nil {
					typ, msg = e.Type, e.Message
				}
				got = append(got, testagent.Describe(span.Attrs["seq"], span.Attrs["rev"], typ, msg))
			}
			slices.Sort(want)
			slices.Sort(got)
			if len(want) != 24 || failed != 12 || !slices.Equal(got, want) {
				t.Errorf("spans:\n%s\nagent logged:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// The summary's errors column.
			row := regexp.MustCompile(`(?m)^\s*(\d+)\s+(\d+)\s.*regenerateBPF$`).FindStringSubmatch(tr.stderr.String())
			if row == nil || row[1] != "24" || row[2] != "12" {
				t.Errorf("summary: want 24 calls, 12 errors:\n%s", tr.stderr.String())
			}
		})
	}
}

func TestCaptureReturnBadInput(t *testing.T) {
	unstripped := testagent.Build(t, testagent.Variant{})
	stripped := testagent.Build(t, testagent.Variant{Stripped: true})
	agent := testagent.Start(t, unstripped, "-workers", "1", "-interval", "10ms")
	trace := []string{"trace", "--pid", strconv.Itoa(agent.PID), "--func", captureFunc}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no such result", slices.Concat(trace, []string{"--capture-return", "n=ret2"}), "has no such result (results: ret0 uint64, ret1 error)"},
		{"error result", slices.Concat(trace, []string{"--capture-return", "n=ret1"}), "has type error; supported: integers, bool, pointers"},
		{"not a result", slices.Concat(trace, []string{"--capture-return", "n=e.ID"}), "want NAME=retN"},
		{"no NAME=", slices.Concat(trace, []string{"--capture-return", "ret0"}), "want NAME=EXPR"},
		{"preset without func", []string{"trace", "--pid", strconv.Itoa(agent.PID), "--preset", "policy", "--capture-return", "n=ret0"}, "--capture-return applies to the --func functions"},
		{"string raw type", slices.Concat(trace, []string{"--capture-return", "n=ret0:string"}), `unknown type "string"`},
		{"offsets: no such result", []string{"offsets", "--binary", unstripped, "--func", captureFunc, "--capture-return", "n=ret7"}, "(results: ret0 uint64, ret1 error)"},
		{"stripped without offsets", []string{"offsets", "--binary", stripped, "--func", captureFunc, "--capture-return", "n=ret0"}, "no DWARF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, tracer(t, nil, tc.args...), tc.want)
		})
	}
}
