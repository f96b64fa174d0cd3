package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/presets"
)

// `tracer presets` lists each preset on one line with its function count
// in the release selected: the newest without one, the one given, or the
// binary's (the stand-in agent does not say its release: a warning, and the
// newest).
func TestPresetsList(t *testing.T) {
	agent := testagent.Build(t, testagent.Variant{Stripped: true})
	for _, tc := range []struct {
		args  []string
		minor string
		warn  bool
	}{
		{nil, presets.Newest(), false},
		{[]string{"--cilium-version", "v1.16.19"}, "1.16", false},
		{[]string{"--cilium-version", "1.17.16"}, "1.17", false},
		{[]string{"--binary", agent}, presets.Newest(), true},
	} {
		r := tracer(t, nil, append([]string{"presets"}, tc.args...)...)
		if r.code != 0 {
			t.Fatalf("presets %q: %s", tc.args, r.stderr)
		}
		if got := r.stderr != ""; got != tc.warn || tc.warn && !strings.Contains(r.stderr, "--cilium-version") {
			t.Errorf("presets %q: stderr %q", tc.args, r.stderr)
		}
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		if len(lines) != 2+len(presets.All) || !strings.HasPrefix(lines[0], "presets of cilium "+tc.minor) {
			t.Fatalf("presets %q:\n%s", tc.args, r.stdout)
		}
		for i, p := range presets.All {
			fields := strings.Fields(lines[2+i])
			if len(fields) < 3 || fields[0] != p.Name || fields[1] != strconv.Itoa(len(p.For(tc.minor))) ||
				strings.Join(fields[2:], " ") != p.Description {
				t.Errorf("presets %q: line %q, want %s %d %s", tc.args, lines[2+i], p.Name, len(p.For(tc.minor)), p.Description)
			}
		}
	}
}

// A preset on the stand-in agent, with real uprobes: the functions of the
// preset it has are traced (a --func naming one of them too adds nothing),
// every other one is named in a warning, and the captures, resolved from
// DWARF, carry what the agent logs of each call.
func TestTracePreset(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	p, err := presets.Lookup("endpoint-regeneration")
	if err != nil {
		t.Fatal(err)
	}
	agent := testagent.Start(t, bin, "-wait-start", "-workers", "4", "-iterations", "5", "-interval", "2ms", "-log-regenerations")
	tr := startTracer(t, nil, "trace", "--pid", strconv.Itoa(agent.PID), "--preset", p.Name,
		"--func", testagent.RegenerateBPF, "--output", "json", "--follow=false")
	tr.waitFor(t, "tracing 5 functions", time.Minute)
	agent.Begin(t)
	agent.Wait(t, 30*time.Second)
	tr.wait(t, 30*time.Second)

	stderr := tr.stderr.String()
	head := regexp.MustCompile(`(?m)^tracer: presets endpoint-regeneration for cilium \S+ \(release unknown\): 5 functions, 11 captures$`)
	if !head.MatchString(stderr) {
		t.Errorf("no line saying what the preset traces:\n%s", stderr)
	}
	reload := "github.com/cilium/cilium/pkg/datapath/loader.(*loader).ReloadDatapath"
	compile := "github.com/cilium/cilium/pkg/datapath/loader.compile"
	have := []string{testagent.Regenerate, testagent.RegenerateBPF, testagent.SyncPolicyMap, reload, compile}
	for _, f := range p.For(presets.Newest()) {
		warned := strings.Contains(stderr, "tracer: warning: preset endpoint-regeneration: "+f.Name+" is not in the binary")
		if warned == slices.Contains(have, f.Name) {
			t.Errorf("%s: warned %v", f.Name, warned)
		}
	}

	var want, got []string
	for _, reg := range agent.Regenerations() {
		want = append(want, reg.EndpointID+" "+reg.Pod+" default")
	}
	calls := map[string]int{}
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
		calls[span.Function]++
		// The stand-in's loader has none of the parameters the
		// preset captures there.
		onEndpoint := strings.Contains(span.Function, "(*Endpoint)")
		if onEndpoint && (span.Attrs["endpoint_id"] == "" || span.Attrs["pod"] == "" || span.Attrs["namespace"] != "default") ||
			!onEndpoint && len(span.Attrs) != 0 {
			t.Errorf("%s: attributes %v", span.Function, span.Attrs)
		}
		if span.Function == testagent.RegenerateBPF {
			got = append(got, fmt.Sprintf("%s %s %s", span.Attrs["endpoint_id"], span.Attrs["pod"], span.Attrs["namespace"]))
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if len(want) != 20 || !slices.Equal(got, want) {
		t.Errorf("regenerateBPF spans:\n%s\nagent logged:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if calls[testagent.Regenerate] != 20 || calls[testagent.SyncPolicyMap] == 0 || calls[reload] == 0 || calls[compile] == 0 {
		t.Errorf("calls per function %v", calls)
	}
}

// `tracer symbols --preset` shows what each function of the preset
// captures, in the raw form the probes read, and its error result.
func TestSymbolsPreset(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	r := tracer(t, nil, "symbols", "--binary", bin, "--preset", "endpoint-regeneration")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(testagent.RegenerateBPF) + `\s+0x\S+\s+0x\S+\s+\d+\s+endpoint_id=arg0\+16:u16,pod=arg0\+24:string,namespace=arg0\+40:string,policy_revision=arg0\+\d+:u64,error=ret1:error\s+0x`)
	if !strings.Contains(r.stdout, "CAPTURES") || !row.MatchString(r.stdout) {
		t.Errorf("symbols --preset:\n%s", r.stdout)
	}
}

func TestPresetBadInput(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	agent := testagent.Start(t, bin, "-workers", "1", "-interval", "10ms")
	pid := strconv.Itoa(agent.PID)
	list := `unknown preset "nope" (presets: endpoint-regeneration, policy, identity, ipcache, kvstore, datapath)`
	dir := t.TempDir()
	config := filepath.Join(dir, "daemon.yaml")
	if err := os.WriteFile(config, []byte("probes:\n  - preset: nope\nexporters: [{json: {}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"trace: unknown preset", []string{"trace", "--pid", pid, "--preset", "nope"}, list},
		{"trace: unknown preset beside a known one", []string{"trace", "--pid", pid, "--preset", "policy", "--preset", "nope"}, list},
		{"symbols: unknown preset", []string{"symbols", "--binary", bin, "--preset", "nope"}, list},
		{"daemon: unknown preset", []string{"daemon", "--config", config}, "probes[0].preset: " + list},
		{"bad release", []string{"trace", "--pid", pid, "--preset", "policy", "--cilium-version", "1.18"}, `cilium version "1.18": want a release such as v1.18.5`},
		{"presets: bad release", []string{"presets", "--cilium-version", "latest"}, `cilium version "latest"`},
		{"capture without func", []string{"trace", "--pid", pid, "--preset", "policy", "--capture", "id=e.ID"}, "--capture applies to the --func functions"},
		{"nothing to trace", []string{"trace", "--pid", pid}, "--func or --preset is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, tracer(t, nil, tc.args...), tc.want)
		})
	}
}
