package export

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// profileCalls are 10 regenerations: regenerate runs 50ms, of which 40ms in
// regenerateBPF, of which 2ms in syncPolicyMapWithDump.
func profileSpans() []Span {
	b := NewSpanBuilder(testResource)
	var spans []Span
	for i := range 10 {
		for _, c := range regenerationTree(uint64(1+10*i), testT0.Add(time.Duration(i)*time.Second)) {
			spans = append(spans, b.Build(c))
		}
	}
	return spans
}

func TestPprof(t *testing.T) {
	file := filepath.Join(t.TempDir(), "calls.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	e := NewPprofExporter(f)
	spans := profileSpans()
	ctx := context.Background()
	// In two batches, as a pipeline would deliver them.
	if err := e.Export(ctx, spans[:14]); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(ctx, spans[14:]); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := e.Export(ctx, spans); !errors.Is(err, ErrShutdown) {
		t.Errorf("Export after Shutdown: %v", err)
	}

	// Parse it back.
	raw, _ := os.ReadFile(file)
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) != 3 {
		t.Errorf("%d samples, want one per distinct stack (3)", len(p.Sample))
	}
	var total, calls int64
	inlined := false
	for _, s := range p.Sample {
		calls += s.Value[0]
		total += s.Value[1]
		for _, l := range s.Location {
			if len(l.Line) == 2 && l.Line[0].Function.Name == "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMap" &&
				l.Line[1].Function.Name == fnRegenerateBPF {
				inlined = true
			}
		}
	}
	if calls != 30 || total != int64(10*50*time.Millisecond) {
		t.Errorf("%d calls, %v total; want 30 calls and the roots' 500ms", calls, time.Duration(total))
	}
	if !inlined {
		t.Error("inlined syncPolicyMap is not a line of regenerateBPF's location")
	}

	// What a user runs.
	out, err := exec.Command("go", "tool", "pprof", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top: %v\n%s", err, out)
	}
	t.Logf("go tool pprof -top:\n%s", out)
	// Rows: flat flat% sum% cum cum% name
	type row struct{ flat, cum, name string }
	var rows []row
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && strings.HasSuffix(f[1], "%") {
			rows = append(rows, row{f[0], f[3], f[5]})
		}
	}
	if len(rows) == 0 || rows[0].name != fnRegenerateBPF || rows[0].flat != "380ms" {
		t.Errorf("top row %+v, want regenerateBPF with 380ms flat", rows)
	}
	for _, r := range rows {
		if r.name == fnRegenerate && (r.flat != "100ms" || r.cum != "500ms") {
			t.Errorf("regenerate: flat %s cum %s, want 100ms and 500ms", r.flat, r.cum)
		}
	}

	// The inlined frame shows up as such.
	out, err = exec.Command("go", "tool", "pprof", "-traces", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -traces: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "syncPolicyMap (inline)") {
		t.Errorf("no inlined frame in -traces:\n%s", out)
	}
}

func TestFolded(t *testing.T) {
	var buf bytes.Buffer
	e := NewFoldedExporter(&buf)
	ctx := context.Background()
	if err := e.Export(ctx, profileSpans()); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	base := "runtime.goexit;github.com/cilium/cilium/pkg/eventqueue.(*EventQueue).run.func1;github.com/cilium/cilium/pkg/endpoint.(*EndpointRegenerationEvent).Handle;" + fnRegenerate
	want := map[string]int64{
		base:                         int64(10 * 10 * time.Millisecond),
		base + ";" + fnRegenerateBPF: int64(10 * 38 * time.Millisecond),
		base + ";" + fnRegenerateBPF + ";github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMap;" + fnSyncPolicyMap: int64(10 * 2 * time.Millisecond),
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for _, l := range lines {
		i := strings.LastIndexByte(l, ' ')
		n, err := strconv.ParseInt(l[i+1:], 10, 64)
		if err != nil || want[l[:i]] != n {
			t.Errorf("line %q: want %d", l, want[l[:i]])
		}
	}
}
