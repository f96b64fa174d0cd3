package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	emptybpf "github.com/cilium-tracer/tracer/internal/bench/bpf"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// hotFunc is the function testdata/hot calls in its loop.
const hotFunc = "main.(*table).lookup"

// A mode is one way of running the hot loop: untraced or under some probes.
type mode struct {
	name string
	// Traced modes run TraceCalls calls, the untraced one PlainCalls: a
	// call costs thousands of times more under a uprobe.
	traced bool
	// attach sets the mode up on the waiting target and returns the
	// function that takes it down again and checks that every call was
	// seen.
	attach func(t *target) (finish func() error, err error)
}

var modes = []mode{
	{name: "untraced", attach: func(*target) (func() error, error) { return func() error { return nil }, nil }},
	{name: "bare entry (empty BPF, perf uprobe)", traced: true, attach: func(t *target) (func() error, error) { return attachBare(t, false, true) }},
	{name: "bare entry (empty BPF)", traced: true, attach: func(t *target) (func() error, error) { return attachBare(t, false, false) }},
	{name: "bare entry+RET pair (empty BPF)", traced: true, attach: func(t *target) (func() error, error) { return attachBare(t, true, false) }},
	{name: "tracer: full without stacks (pairing, event)", traced: true, attach: func(t *target) (func() error, error) { return attachFull(t, false) }},
	{name: "tracer: full (pairing, stack, event)", traced: true, attach: func(t *target) (func() error, error) { return attachFull(t, true) }},
	{name: "tracer: entry-only (stack + count)", traced: true, attach: attachEntryOnly},
	{name: "bpftrace @s[ustack] = count()", traced: true, attach: attachBpftrace},
}

// Indexes into modes, for the ratios.
const (
	modeUntraced = iota
	modeBarePerfEntry
	modeBareEntry
	modeBare
	modeFullNoStacks
	modeFull
	modeEntryOnly
	modeBpftrace
)

type overheadConfig struct {
	Rounds     int
	PlainCalls int // calls per run, untraced
	TraceCalls int // calls per run, traced
}

// overheadResult holds ns per call of every run, per mode.
type overheadResult struct {
	Config    overheadConfig
	NsPerCall [][]float64 // [mode][round]
}

func (r overheadResult) median(m int) float64 { return median(r.NsPerCall[m]) }

// overlap says so when the rounds of mode a and mode b overlap: the
// difference of their medians is then within this run's noise.
func (r overheadResult) overlap(a, b int) string {
	if minOf(r.NsPerCall[a]) <= maxOf(r.NsPerCall[b]) && minOf(r.NsPerCall[b]) <= maxOf(r.NsPerCall[a]) {
		return ", but their per-round ranges overlap: the difference is within this run's noise"
	}
	return ""
}

// runOverhead runs every mode once per round (runRounds).
func runOverhead(hotBin string, cfg overheadConfig, log io.Writer) (overheadResult, error) {
	ns, err := runRounds(hotBin, modes, cfg.Rounds, func(m mode) int {
		if m.traced {
			return cfg.TraceCalls
		}
		return cfg.PlainCalls
	}, log)
	return overheadResult{Config: cfg, NsPerCall: ns}, err
}

// runRounds runs target bin in every mode of ms once per round, the modes
// in rotation so that none always runs first or last: drift of the
// machine's load spreads over all of them and the ratios stay honest. It
// returns the ns per call of each run, [mode][round]; calls says how many
// calls a run of a mode makes.
func runRounds(bin string, ms []mode, rounds int, calls func(mode) int, log io.Writer) ([][]float64, error) {
	res := make([][]float64, len(ms))
	for round := range rounds {
		for k := range ms {
			m := (round + k) % len(ms)
			ns, err := runMode(bin, ms[m], calls(ms[m]))
			if err != nil {
				return res, fmt.Errorf("round %d, %s: %w", round+1, ms[m].name, err)
			}
			fmt.Fprintf(log, "  round %d  %-45s %10.1f ns/call\n", round+1, ms[m].name, ns)
			res[m] = append(res[m], ns)
		}
	}
	return res, nil
}

// A target is a started testdata/hot waiting for its go.
type target struct {
	bin   string
	calls int
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startTarget(bin string, calls int) (*target, error) {
	cmd := exec.Command(bin, "-n", strconv.Itoa(calls))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &target{bin: bin, calls: calls, cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: bufio.NewScanner(stdout)}
	if !t.lines.Scan() || !strings.HasPrefix(t.lines.Text(), "ready pid=") {
		t.kill()
		return nil, fmt.Errorf("target did not start: %q", t.lines.Text())
	}
	return t, nil
}

func (t *target) kill() {
	t.cmd.Process.Kill()
	t.cmd.Wait()
}

var resultLine = regexp.MustCompile(`^result calls=(\d+) ns=(\d+) sum=\d+$`)

// run lets the target loop and returns its time per call.
func (t *target) run() (float64, error) {
	if _, err := io.WriteString(t.stdin, "go\n"); err != nil {
		return 0, err
	}
	if !t.lines.Scan() {
		return 0, fmt.Errorf("target printed no result: %v", t.lines.Err())
	}
	m := resultLine.FindStringSubmatch(t.lines.Text())
	if m == nil {
		return 0, fmt.Errorf("target printed %q", t.lines.Text())
	}
	n, _ := strconv.Atoi(m[1])
	ns, _ := strconv.ParseFloat(m[2], 64)
	if err := t.cmd.Wait(); err != nil {
		return 0, fmt.Errorf("target: %w", err)
	}
	return ns / float64(n), nil
}

func runMode(bin string, m mode, calls int) (float64, error) {
	t, err := startTarget(bin, calls)
	if err != nil {
		return 0, err
	}
	finish, err := m.attach(t)
	if err != nil {
		t.kill()
		return 0, err
	}
	ns, err := t.run()
	if err != nil {
		t.kill()
		finish()
		return 0, err
	}
	if err := finish(); err != nil {
		return 0, err
	}
	return ns, nil
}

// attachBare attaches the empty programs where the tracer attaches its
// own: the entry and, with rets, every RET, the probe ID as cookie, through
// the same kind of link unless perf forces perf uprobes (as bpftrace
// uses). Kernel BPF stats, on only meanwhile, count the runs, so a probe
// that did not fire is seen.
func attachBare(t *target, rets, perf bool) (func() error, error) {
	f, err := symbols.Open(t.bin)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	probes, _, err := session.Resolve(f, []string{hotFunc}, probe.Config{})
	if err != nil {
		return nil, err
	}
	if len(probes) != 1 {
		return nil, fmt.Errorf("%s: %d functions", hotFunc, len(probes))
	}
	p := probes[0]

	_ = kernel.RaiseMemlock()
	spec, err := emptybpf.LoadEmpty()
	if err != nil {
		return nil, err
	}
	multi := uprobeMulti() && !perf
	if multi {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	var objs emptybpf.EmptyObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load empty programs: %w", err)
	}
	ex, err := link.OpenExecutable(t.bin)
	if err != nil {
		objs.Close()
		return nil, err
	}
	var links []link.Link
	closeAll := func() {
		for _, l := range links {
			l.Close()
		}
		objs.Close()
	}
	// As probe.Set attaches: one uprobe_multi link per program where the
	// kernel has them, else one uprobe per site.
	attach := func(prog *ebpf.Program, offs []uint64) error {
		if multi {
			l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: offs, Cookies: make([]uint64, len(offs)), PID: uint32(t.pid)})
			if err != nil {
				return err
			}
			links = append(links, l)
			return nil
		}
		for _, off := range offs {
			l, err := ex.Uprobe(p.Func.Name, prog, &link.UprobeOptions{Address: off, PID: t.pid, Cookie: 0})
			if err != nil {
				return err
			}
			links = append(links, l)
		}
		return nil
	}
	progs := map[string]*ebpf.Program{"entry": objs.EmptyEntry}
	if rets {
		progs["return"] = objs.EmptyReturn
		if err := attach(objs.EmptyReturn, p.Returns); err != nil {
			closeAll()
			return nil, err
		}
	}
	if err := attach(objs.EmptyEntry, []uint64{p.Func.Offset}); err != nil {
		closeAll()
		return nil, err
	}
	stats, statsErr := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	return func() error {
		defer closeAll()
		if statsErr != nil {
			return nil // the timing alone shows the probes fired
		}
		defer stats.Close()
		for name, prog := range progs {
			st, err := prog.Stats()
			if err != nil {
				return err
			}
			if st.RunCount != uint64(t.calls) {
				return fmt.Errorf("empty %s program ran %d times for %d calls", name, st.RunCount, t.calls)
			}
		}
		return nil
	}, nil
}

// attachFull traces the function as `tracer trace [--stacks]` does: a
// session whose reader builds every call while the target runs.
func attachFull(t *target, stacks bool) (func() error, error) {
	got := 0
	return runSession(session.Config{PID: t.pid, Binary: t.bin, Funcs: []string{hotFunc}, Stacks: stacks},
		func(c *calls.Call) {
			if !c.Unfinished && (len(c.Stack) > 0) == stacks {
				got++
			}
		},
		func(s *session.Session) error {
			if got != t.calls {
				cs, _ := s.Set.Counters()
				return fmt.Errorf("%d calls read for %d made (stacks %v; counters %+v)", got, t.calls, stacks, cs)
			}
			return nil
		})
}

// runSession starts a session of cfg whose reader passes each call to
// each while the target runs. The function it returns stops it, then
// checks it with check.
func runSession(cfg session.Config, each func(*calls.Call), check func(*session.Session) error) (func() error, error) {
	s, err := session.Start(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg     sync.WaitGroup
		runErr error
	)
	wg.Go(func() { runErr = s.Run(ctx, each) })
	return func() error {
		cancel()
		wg.Wait()
		defer s.Close()
		if runErr != nil && !errors.Is(runErr, session.ErrTargetExited) {
			return runErr
		}
		return check(s)
	}, nil
}

// attachEntryOnly counts the function's entries per stack in BPF.
func attachEntryOnly(t *target) (func() error, error) {
	s, err := session.Start(session.Config{PID: t.pid, Binary: t.bin, Funcs: []string{hotFunc},
		Config: probe.Config{EntryOnly: true}, Stacks: true})
	if err != nil {
		return nil, err
	}
	return func() error {
		defer s.Close()
		counts, err := s.Set.EntryCounts()
		if err != nil {
			return err
		}
		var n uint64
		for _, c := range counts {
			if c.StackID < 0 {
				return fmt.Errorf("entry counted without a stack")
			}
			n += c.Count
		}
		if n != uint64(t.calls) {
			return fmt.Errorf("%d entries counted for %d calls", n, t.calls)
		}
		return nil
	}, nil
}

var bpftraceCount = regexp.MustCompile(`(?m)^\]: (\d+)$`)

// attachBpftrace runs the one-liner users would run instead. Its BEGIN
// probe fires once every other probe is attached.
func attachBpftrace(t *target) (func() error, error) {
	prog := fmt.Sprintf(`BEGIN { printf("attached\n"); } uprobe:%s:"%s" { @s[ustack] = count(); }`, t.bin, hotFunc)
	cmd := exec.Command("bpftrace", "-p", strconv.Itoa(t.pid), "-e", prog)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bpftrace: %w", err)
	}
	out := make(chan string, 1)
	attached := make(chan struct{})
	go func() {
		var sb strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "attached" {
				close(attached)
			}
			sb.WriteString(sc.Text() + "\n")
		}
		out <- sb.String()
	}()
	select {
	case <-attached:
	case s := <-out:
		cmd.Wait()
		return nil, fmt.Errorf("bpftrace exited: %s%s", s, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, errors.New("bpftrace not attached after 60s")
	}
	return func() error {
		cmd.Process.Signal(os.Interrupt)
		s := <-out
		cmd.Wait()
		var n int
		for _, m := range bpftraceCount.FindAllStringSubmatch(s, -1) {
			c, _ := strconv.Atoi(m[1])
			n += c
		}
		if n != t.calls {
			return fmt.Errorf("bpftrace counted %d calls for %d made:\n%s%s", n, t.calls, s, stderr.String())
		}
		return nil
	}, nil
}

// uprobeMulti reports whether the kernel has uprobe_multi links, which
// probe.Set then attaches through.
func uprobeMulti() bool { return features.HaveBPFLinkUprobeMulti() == nil }

// buildTestdata builds internal/bench/testdata/NAME into dir.
func buildTestdata(root, dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./internal/bench/testdata/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, b)
	}
	return out, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
