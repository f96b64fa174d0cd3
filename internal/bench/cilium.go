package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumlab"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// What the real-agent benchmark attaches: every method of *Endpoint whose
// name starts with regenerate (regenerate, regeneratePolicy, regenerateBPF
// and their closures), capturing the endpoint's ID, as a user tracing
// regenerations would.
const (
	ciliumFuncs   = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate*"
	ciliumCapture = "endpoint_id=e.ID"
)

// A ciliumBuild is one build of cilium-agent and its attach runs.
type ciliumBuild struct {
	Name     string
	Size     int64
	Stripped bool // captures from an offsets file; else from DWARF
	Runs     []attachRun
}

func (b ciliumBuild) median(f func(attachRun) time.Duration) time.Duration {
	return time.Duration(medianOf(b.Runs, func(r attachRun) float64 { return float64(f(r)) }))
}

// ciliumResult is the real-agent attach benchmark.
type ciliumResult struct {
	Version string
	Builds  []ciliumBuild
}

// benchCilium attaches to the real cilium-agent, built by ciliumlab (once;
// it is cached), in fresh processes: the release-style stripped build with
// an offsets file made from the unstripped build, as `tracer offsets`
// makes it, and the unstripped build with captures from its DWARF. The
// agent is not run: the probes are filtered on the attaching process, so a
// lab's agent running the same file is not touched.
func benchCilium(ctx context.Context, dir string, runs int, log io.Writer) (ciliumResult, error) {
	bins, err := ciliumlab.Build(ctx, ciliumlab.Pinned, log)
	if err != nil {
		return ciliumResult{}, err
	}
	offsets := filepath.Join(dir, "cilium-offsets.json")
	if err := writeOffsets(bins.Agent, offsets); err != nil {
		return ciliumResult{}, err
	}
	res := ciliumResult{Version: bins.Version}
	for _, b := range []ciliumBuild{
		{Name: "stripped (-s -w), offsets file", Stripped: true},
		{Name: "not stripped, DWARF"},
	} {
		spec := attachSpec{Binary: bins.Agent, Funcs: []string{ciliumFuncs}, Captures: []string{ciliumCapture}, PID: selfPID}
		if b.Stripped {
			spec.Binary, spec.Offsets = bins.AgentStripped, offsets
		}
		st, err := os.Stat(spec.Binary)
		if err != nil {
			return ciliumResult{}, err
		}
		b.Size = st.Size()
		for range runs {
			r, err := runAttach(spec, false)
			if err != nil {
				return ciliumResult{}, fmt.Errorf("cilium-agent %s: %w", b.Name, err)
			}
			fmt.Fprintf(log, "  %-31s resolve %v, captures %v, goid offset %v (peak %d MiB), BPF load + %d uprobes %v: whole %v, peak RSS %d MiB\n",
				b.Name, ms(r.Resolve), ms(r.Captures), ms(r.Goid), r.ResolveKB>>10, r.Uprobes, ms(r.Attach), ms(r.whole()), r.PeakKB>>10)
			b.Runs = append(b.Runs, r)
		}
		res.Builds = append(res.Builds, b)
	}
	return res, nil
}

// writeOffsets writes the offsets file of the benchmark's captures for
// agent, as `tracer offsets --binary agent --func ... --capture ...` does.
func writeOffsets(agent, path string) error {
	f, err := symbols.Open(agent)
	if err != nil {
		return err
	}
	defer f.Close()
	fns, err := f.Funcs(ciliumFuncs)
	if err != nil {
		return err
	}
	name, expr, err := args.ParseCaptureFlag(ciliumCapture)
	if err != nil {
		return err
	}
	o, err := offsets.New(f, fns, [][2]string{{name, expr}})
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := o.Write(out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ciliumSection reports the real-agent attach benchmark.
func ciliumSection(c ciliumResult) section {
	s := section{Title: fmt.Sprintf("Attach to the real cilium-agent %s: `%s`, capture %s (median of %d fresh processes)",
		c.Version, ciliumFuncs, ciliumCapture, len(c.Builds[0].Runs))}
	for _, b := range c.Builds {
		name := fmt.Sprintf("%s, %.1f MB", b.Name, float64(b.Size)/1e6)
		resolve, captures, goid := b.median(func(r attachRun) time.Duration { return r.Resolve }), b.median(func(r attachRun) time.Duration { return r.Captures }), b.median(func(r attachRun) time.Duration { return r.Goid })
		bpf, whole := b.median(func(r attachRun) time.Duration { return r.Attach }), b.median(attachRun.whole)
		peakMiB := medianOf(b.Runs, func(r attachRun) float64 { return float64(r.PeakKB) }) / 1024
		how := "read the offsets file, check its fingerprint"
		target, limit := "< 300 ms", 300*time.Millisecond
		if !b.Stripped {
			how = "from DWARF"
			target, limit = "< 1 s", time.Second
		}
		s.Rows = append(s.Rows,
			row{Name: name + ": open, resolve the functions, scan RETs", Value: ms(resolve)},
			row{Name: name + ": captures (" + how + ")", Value: ms(captures)},
			row{Name: name + ": goid offset", Value: ms(goid)},
			row{Name: fmt.Sprintf("%s: load BPF, attach %d uprobe sites", name, b.Runs[0].Uprobes), Value: ms(bpf)},
			row{Name: name + ": whole attach", Value: ms(whole), Target: target, Met: verdict(whole < limit)},
		)
		peak := row{Name: name + ": peak RSS of the whole attach", Value: fmt.Sprintf("%.1f MiB", peakMiB)}
		if b.Stripped {
			peak.Target, peak.Met = "< 80 MiB", verdict(peakMiB < 80)
		}
		s.Rows = append(s.Rows, peak)
		if whole >= limit {
			why := "the machine's load (compare the overhead rounds)"
			if !b.Stripped && captures > whole/2 {
				why = "decompressing .debug_info, one zlib stream, up to the compile unit of pkg/endpoint, which the linker places late in it"
			}
			s.Missed = append(s.Missed, fmt.Sprintf("%s: the whole attach took %s (target %s): %s resolving, %s captures, %s goid offset, %s loading BPF and attaching. Likely reason: %s.",
				name, ms(whole), target, ms(resolve), ms(captures), ms(goid), ms(bpf), why))
		}
		if b.Stripped && peakMiB >= 80 {
			s.Missed = append(s.Missed, fmt.Sprintf("%s: peak RSS %.0f MiB (target 80 MiB). Likely reason: the pages of the memory-mapped function table read while resolving count as RSS.", name, peakMiB))
		}
	}
	return s
}
