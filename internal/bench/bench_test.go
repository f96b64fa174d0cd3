package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	maybeAttachChild()
	maybeExportChild()
	os.Exit(m.Run())
}

// TestQuick runs the benchmark program with tiny runs and checks that
// every row comes out; it asserts nothing about the numbers, which mean
// nothing at this size. The real cilium-agent's section is
// TestQuickCilium's.
func TestQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: uprobes and BPF")
	}
	out := t.TempDir() + "/BENCHMARKS.md"
	var log bytes.Buffer
	if err := run(true, out, 1, 1, false, []string{"overhead", "pipeline", "attach"}, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Quick mode"}
	for _, m := range modes {
		want = append(want, "| "+m.name+" |")
	}
	for _, name := range stageNames {
		want = append(want, "| "+name+" |")
	}
	want = append(want, "| full / bare pair |", "| entry-only / bpftrace ustack |", "| full pipeline events/s |")
	for _, w := range want {
		if !strings.Contains(string(md), w) {
			t.Errorf("report lacks %q", w)
		}
		if w != "Quick mode" && !strings.Contains(log.String(), strings.Trim(w, "| ")) {
			t.Errorf("printed table lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s\noutput:\n%s", md, log.String())
	}
}

// TestQuickCilium runs the real cilium-agent's attach benchmark once for
// each build. The first run on a machine builds cilium (about 15 minutes;
// give go test a -timeout to match); later ones use the cached build.
func TestQuickCilium(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: uprobes and BPF")
	}
	out := t.TempDir() + "/BENCHMARKS.md"
	var log bytes.Buffer
	if err := run(true, out, 1, 1, false, []string{"cilium"}, &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, build := range []string{"stripped (-s -w), offsets file", "not stripped, DWARF"} {
		for _, what := range []string{"captures", "whole attach", "peak RSS of the whole attach"} {
			if !strings.Contains(string(md), build) || !strings.Contains(string(md), what) {
				t.Errorf("report lacks %s: %s", build, what)
			}
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s\noutput:\n%s", md, log.String())
	}
}

// BenchmarkPipeline is the pipeline benchmark under go test, for
// profiling: go test -run=^$ -bench=Pipeline -cpuprofile=cpu.out ./internal/bench
func BenchmarkPipeline(b *testing.B) {
	root, err := repoRoot()
	if err != nil {
		b.Fatal(err)
	}
	d, err := loadPipeline(root, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer d.File.Close()
	p, err := newPipeline(d, stageClickHouse)
	if err != nil {
		b.Fatal(err)
	}
	if err := p.events(len(d.Samples)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	if err := p.events(b.N); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
