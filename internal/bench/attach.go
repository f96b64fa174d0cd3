package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// attachFuncs is how many functions the attach benchmark resolves.
const attachFuncs = 20

// wideFuncs is how many functions the attach and detach benchmark of a broad
// glob probes: about what pkg/policy.* and pkg/endpoint.* match in
// cilium-agent (800 functions, 2,141 uprobes).
const wideFuncs = 1000

// A bigBinary is one build of internal/bench/big.
type bigBinary struct {
	Name string
	Path string
	Size int64
}

// buildBig builds internal/bench/big stripped, as release cilium-agent images
// are, and not stripped.
func buildBig(root, dir string) ([]bigBinary, error) {
	var out []bigBinary
	for _, v := range []struct {
		name  string
		flags []string
	}{
		{"stripped (-s -w)", []string{"-ldflags=-s -w"}},
		{"not stripped", nil},
	} {
		path := filepath.Join(dir, "big-"+strings.Fields(v.name)[0])
		args := append(append([]string{"build", "-o", path}, v.flags...), ".")
		cmd := exec.Command("go", args...)
		// big is a module of its own, so the tracer's go.mod does not
		// require the Kubernetes API.
		cmd.Dir = filepath.Join(root, "internal", "bench", "big")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build big: %w\n%s", err, b)
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		out = append(out, bigBinary{Name: v.name, Path: path, Size: st.Size()})
	}
	return out, nil
}

// pickFuncs chooses functions spread over the binary whose bodies decode,
// as a user tracing a handful of functions would name them.
func pickFuncs(path string, n int) ([]string, error) {
	f, err := symbols.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	all, err := f.Funcs("*")
	if err != nil {
		return nil, err
	}
	var names []string
	for i := 0; i < len(all) && len(names) < n; i += len(all)/(2*n) + 1 {
		fn := all[i]
		if fn.End-fn.Entry < 64 || strings.HasSuffix(fn.Name, ".abi0") {
			continue
		}
		if rets, err := f.ReturnOffsets(fn); err == nil && len(rets) > 0 {
			names = append(names, fn.Name)
		}
	}
	if len(names) < n {
		return nil, fmt.Errorf("only %d usable functions in %s", len(names), path)
	}
	return names, nil
}

// attachRun is one fresh process attaching to a big binary.
type attachRun struct {
	Resolve   time.Duration // open, resolve the functions, find their RETs and the panic probes
	Captures  time.Duration // resolve the captures: from DWARF, or an offsets file read and checked
	Goid      time.Duration // find the offset of runtime.g.goid
	ResolveKB int64         // peak RSS until then
	Attach    time.Duration // load the BPF programs, attach every uprobe
	Detach    time.Duration // remove every uprobe, as tracing stops
	PeakKB    int64         // peak RSS of the whole process
	Uprobes   int
}

// symbolSide is everything before the BPF programs are loaded.
func (r attachRun) symbolSide() time.Duration { return r.Resolve + r.Captures + r.Goid }

// whole is the whole attach, detaching aside.
func (r attachRun) whole() time.Duration { return r.symbolSide() + r.Attach }

// An attachSpec is what a child process started by runAttach attaches to.
type attachSpec struct {
	Binary   string
	Funcs    []string
	Captures []string // NAME=EXPR, as for tracer trace --capture
	Offsets  string   // offsets file for the captures; "": none
	// PID filters the probes: 0 probes every process running Binary;
	// selfPID the child itself, which does not run it, so that a process
	// running Binary elsewhere (a lab's cilium-agent) is never touched.
	PID int
}

const selfPID = -1

// attachChild is what the child process runs: the steps of session.Start
// that do not need a running target, then probe.Attach, then
// probe.Set.Stop. It prints its attachRun as JSON for runAttach.
func attachChild(spec attachSpec, w io.Writer) error {
	start := time.Now()
	f, err := symbols.Open(spec.Binary)
	if err != nil {
		return err
	}
	defer f.Close()
	probes, refused, err := session.Resolve(f, spec.Funcs, probe.Config{})
	if err != nil {
		return err
	}
	if len(refused) > 0 {
		return fmt.Errorf("%s refused: %w", refused[0].Func, refused[0].Reason)
	}
	panics := session.PanicOffsets(f)
	if len(panics) == 0 {
		return fmt.Errorf("no runtime.gopanic in %s", spec.Binary)
	}
	var r attachRun
	r.Resolve = time.Since(start)

	start = time.Now()
	var o *offsets.File
	if spec.Offsets != "" {
		if o, err = offsets.Open(spec.Offsets); err != nil {
			return err
		}
	}
	if err := session.ResolveCaptures(f, probes, spec.Captures, o); err != nil {
		return err
	}
	r.Captures = time.Since(start)

	start = time.Now()
	goid, _ := offsets.GoidOffsetFrom(f, o)
	r.Goid = time.Since(start)
	if r.ResolveKB, err = vmHWM(); err != nil {
		return err
	}

	pid := spec.PID
	if pid == selfPID {
		pid = os.Getpid()
	}
	start = time.Now()
	set, err := probe.Attach(probes, probe.Options{Binary: spec.Binary, PID: pid, GoidOffset: goid, Stacks: true, Panics: panics})
	if err != nil {
		return err
	}
	r.Attach = time.Since(start)
	r.Uprobes = len(panics) + set.Uprobes()
	start = time.Now()
	err = set.Stop(func(*probe.Record) {})
	r.Detach = time.Since(start)
	set.Close()
	if err != nil {
		return err
	}
	if r.PeakKB, err = vmHWM(); err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(r)
}

// vmHWM is the process's peak RSS so far, in KiB.
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}

// attachChildEnv marks a child process started by runAttach; it reads its
// attachSpec from stdin.
const attachChildEnv = "TRACER_BENCH_ATTACH_CHILD"

// maybeAttachChild runs attachChild and exits if this process is a child
// started by runAttach (the bench program or its test binary).
func maybeAttachChild() {
	if os.Getenv(attachChildEnv) == "" {
		return
	}
	var spec attachSpec
	err := json.NewDecoder(os.Stdin).Decode(&spec)
	if err == nil {
		err = attachChild(spec, os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: attach: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runAttach runs attachChild in a fresh process of this program, so its
// peak RSS is the attach's alone, not the benchmark's. The child reads its
// own VmHWM: the rusage of a child started by os/exec also counts the
// parent's pages, which the child shared until exec (clone with CLONE_VM).
// With live, the probes go into a running process of spec.Binary, as they
// do when tracing: each uprobe is then a breakpoint written into its text.
func runAttach(spec attachSpec, live bool) (attachRun, error) {
	self, err := os.Executable()
	if err != nil {
		return attachRun{}, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), attachChildEnv+"=1")
	if live {
		target := exec.Command(spec.Binary, "-wait")
		stdin, err := target.StdinPipe()
		if err != nil {
			return attachRun{}, err
		}
		if err := target.Start(); err != nil {
			return attachRun{}, err
		}
		defer target.Wait()
		defer stdin.Close()
		spec.PID = target.Process.Pid
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return attachRun{}, err
	}
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return attachRun{}, fmt.Errorf("attach child: %w", err)
	}
	var r attachRun
	if err := json.Unmarshal(out, &r); err != nil {
		return attachRun{}, fmt.Errorf("attach child printed %q: %w", out, err)
	}
	return r, nil
}

// attachResult is the attach benchmark for one build of the big binary:
// the median of its runs.
type attachResult struct {
	Binary bigBinary
	Runs   []attachRun
	// Wide are runs probing wideFuncs functions, for the time to attach
	// and detach a broad glob.
	Wide []attachRun
	// Symbolization rates over distinct PCs: the first time each is seen
	// (symbols.File.Frames on a fresh File), and again through a
	// calls.Builder's cache, as a tracing session sees a stack repeat.
	UncachedPCs, CachedPCs   int
	UncachedRate, CachedRate float64 // PCs/s
}

func (a attachResult) median(f func(attachRun) float64) float64 {
	return medianOf(a.Runs, f)
}

func medianOf(runs []attachRun, f func(attachRun) float64) float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = f(r)
	}
	return median(xs)
}

// benchAttach measures every build of the big binary: runs fresh attach
// processes each, and the symbolization rates.
func benchAttach(bins []bigBinary, runs int, symbolizePCs int, log io.Writer) ([]attachResult, error) {
	var out []attachResult
	for _, b := range bins {
		names, err := pickFuncs(b.Path, attachFuncs)
		if err != nil {
			return nil, err
		}
		res := attachResult{Binary: b}
		for range runs {
			r, err := runAttach(attachSpec{Binary: b.Path, Funcs: names}, false)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", b.Name, err)
			}
			fmt.Fprintf(log, "  %-18s resolve %v, goid offset %v (peak %d MiB), BPF load + %d uprobes %v, peak RSS %d MiB\n",
				b.Name, r.Resolve.Round(time.Millisecond), r.Goid.Round(time.Millisecond), r.ResolveKB>>10, r.Uprobes, r.Attach.Round(time.Millisecond), r.PeakKB>>10)
			res.Runs = append(res.Runs, r)
		}
		if names, err = pickFuncs(b.Path, wideFuncs); err != nil {
			return nil, err
		}
		for range runs {
			r, err := runAttach(attachSpec{Binary: b.Path, Funcs: names}, true)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", b.Name, err)
			}
			fmt.Fprintf(log, "  %-18s %d functions: BPF load + %d uprobes %v, detach %v\n",
				b.Name, wideFuncs, r.Uprobes, r.Attach.Round(time.Millisecond), r.Detach.Round(time.Millisecond))
			res.Wide = append(res.Wide, r)
		}
		if err := benchSymbolize(&res, symbolizePCs); err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name, err)
		}
		fmt.Fprintf(log, "  %-18s symbolize %.0f PCs/s uncached, %.0f PCs/s cached\n", b.Name, res.UncachedRate, res.CachedRate)
		out = append(out, res)
	}
	return out, nil
}

// benchSymbolize measures how fast distinct PCs spread over the binary's
// functions are symbolized, first uncached, then through a Builder.
func benchSymbolize(res *attachResult, n int) error {
	f, err := symbols.Open(res.Binary.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	all, err := f.Funcs("*")
	if err != nil {
		return err
	}
	var pcs []uint64
	for i := 0; i < len(all) && len(pcs) < n; i += max(len(all)/n, 1) {
		fn := all[i]
		pcs = append(pcs, fn.Entry+(fn.End-fn.Entry)/2)
	}
	// Parse the line tables before the clock starts: that is the
	// attach's cost, measured above.
	f.Frames(all[0].Entry)

	start := time.Now()
	for _, pc := range pcs {
		if len(f.Frames(pc)) == 0 {
			return fmt.Errorf("no frames at %#x", pc)
		}
	}
	res.UncachedPCs, res.UncachedRate = len(pcs), float64(len(pcs))/time.Since(start).Seconds()

	// Stacks of 16 PCs; the first pass fills the Builder's cache.
	b := calls.Builder{File: f}
	symbolize := func() int {
		frames := 0
		for i := 0; i+16 <= len(pcs); i += 16 {
			frames += len(b.Symbolize(pcs[i : i+16]))
		}
		return frames
	}
	symbolize()
	const passes = 20
	start = time.Now()
	for range passes {
		if symbolize() == 0 {
			return fmt.Errorf("no frames")
		}
	}
	res.CachedPCs = len(pcs) / 16 * 16
	res.CachedRate = float64(passes*res.CachedPCs) / time.Since(start).Seconds()
	return nil
}
