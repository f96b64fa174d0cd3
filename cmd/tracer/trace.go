package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/probe/syscalls"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

type traceFlags struct {
	target         container.Selector
	binary         string
	funcs          []string
	duration       time.Duration
	minDur         time.Duration
	sample         uint32
	output         string
	stacks         bool
	follow         bool
	captures       []string
	returns        []string
	offsets        string
	pprof          string
	pprofBlocked   string
	folded         string
	entry          bool
	byProc         bool
	breakdown      bool
	breakdownEvery time.Duration
	syscalls       bool
	syscallMin     time.Duration
	presets        []string
	release        string

	clickhouse export.ClickHouseExporterConfig
	otlp       export.OTLPExporterConfig
}

func traceCmd() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace [--pid PID | --container NAME | --process NAME | --binary PATH] (--func PATTERN | --preset NAME)...",
		Short: "Trace calls live and print a per-function summary at the end",
		Long: `Trace calls live and print a per-function summary at the end.

What is traced:
  --pid, --process, or neither: one process (by default the one cilium-agent
    on the node), followed across restarts; --binary then names the file to
    attach to in its place.
  --binary PATH alone: every process that runs the file PATH, those started
    later included, as bpftrace's path probes are: short-lived programs such
    as cilium-cni. Each call names its process, and the summary lists the
    processes that ran.
  --container NAME --binary PATH: the same, for the file PATH inside the
    container's root. The probes are on the file, so they fire in every
    container sharing the image layer that holds it.

--preset NAME traces a preset (see 'tracer presets') in the functions of
the target's cilium release, with the values it captures: read from DWARF,
or on a stripped binary from the presets' catalogue of offsets for that
release (or from --offsets). The release is read from the binary's build
information; --cilium-version gives it for binaries that do not carry it.
--capture applies to the --func functions.

The summary has, per function: completed calls; p50, p90 and p99 of their
durations by nearest rank (of n durations sorted in increasing order, the
one at rank ceil(q*n), counted from 1: always a duration that was seen, and
p99 of fewer than 100 calls is their max); max; unfinished calls (panic,
Goexit, expired, target gone); and the calls BPF counted but did not
report: dropped (ring buffer full), untracked (never followed: too many
traced calls in flight on their goroutine, or the goroutine table full),
not sampled (--sample) and filtered (--min-duration).

With --output json, stdout carries only JSON, one object per call and line,
and the summary (or the --entry-only counts) goes to stderr, so
'tracer trace --output json | jq .' reads the whole stream.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd.Context(), cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.target.PID, "pid", 0, "host PID of the target")
	fl.StringVar(&f.target.Container, "container", "", "Docker container name or ID of the target")
	fl.StringVar(&f.target.Process, "process", "", "process name to find in /proc (default: find cilium-agent)")
	fl.StringVar(&f.binary, "binary", "", "alone or with --container: trace every process that runs this executable (inside the container's root with --container); with --pid or --process: the file to attach to in place of the target's")
	fl.StringArrayVar(&f.funcs, "func", nil, "function name or glob (`*` and `?`; `(*` is literal), repeatable")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (default: until interrupted or the target exits)")
	fl.DurationVar(&f.minDur, "min-duration", 0, "report only calls at least this long (filtered in BPF)")
	fl.Uint32Var(&f.sample, "sample", 1, "trace one call in N, chosen at random in BPF")
	fl.StringVar(&f.output, "output", "text", "live output: text, json (one object per call and line; the summary goes to stderr) or none")
	fl.BoolVar(&f.stacks, "stacks", false, "capture and print the caller stack of each call")
	fl.BoolVar(&f.byProc, "by-process", false, "with --binary: a summary per process too")
	fl.BoolVar(&f.breakdown, "breakdown", false, "where each call's time went: its goroutine's state sampled from the target's memory while it runs (on CPU, runnable, in a syscall, blocked by reason, and where); for slow functions, no extra trap but one more record per call")
	fl.DurationVar(&f.breakdownEvery, "breakdown-every", session.DefaultBreakdownEvery, "with --breakdown: how often a call's goroutine is sampled")
	fl.BoolVar(&f.syscalls, "syscalls", false, "the system calls and child processes of each call, from tracepoints at every system call on the node (stopped at once in other processes): those at least --syscall-min long as child spans (bpf(2) by command, netlink sendmsg/recvmsg named), counts of the shorter ones; implied by --breakdown")
	fl.DurationVar(&f.syscallMin, "syscall-min", syscalls.DefaultSpanMin, "with --syscalls or --breakdown: the shortest system call reported as a child span")
	fl.BoolVar(&f.entry, "entry-only", false, "count calls per caller stack at entry only: no RET probes, no durations or spans, about half the cost per call, for hot functions; prints the counts at the end")
	fl.BoolVar(&f.follow, "follow", true, "when the target exits, wait for it to restart and attach again")
	fl.StringArrayVar(&f.clickhouse.Addrs, "clickhouse", nil, "also export spans to this ClickHouse (host:port, native protocol), repeatable for a cluster; password from $CLICKHOUSE_PASSWORD or --clickhouse-password-file")
	fl.StringVar(&f.clickhouse.Database, "clickhouse-database", "", "ClickHouse database (default otel)")
	fl.StringVar(&f.clickhouse.Table, "clickhouse-table", "", "ClickHouse table (default otel_traces)")
	fl.StringVar(&f.clickhouse.Cluster, "clickhouse-cluster", "", "create the tables ON CLUSTER this ClickHouse cluster: ReplicatedMergeTree tables local to each node behind Distributed tables of the same names, sharded by trace ID")
	fl.StringVar(&f.clickhouse.AddrsOrder, "clickhouse-addrs-order", "", "order the --clickhouse servers are tried in: in_order (default) or random, drawn once per process")
	fl.StringVar(&f.clickhouse.Username, "clickhouse-user", "", "ClickHouse user (default default)")
	fl.StringVar(&f.clickhouse.PasswordFile, "clickhouse-password-file", "", "file holding the ClickHouse password")
	fl.StringVar(&f.otlp.Endpoint, "otlp", "", "also export spans to this OTLP receiver (host:port)")
	fl.StringVar(&f.otlp.Protocol, "otlp-protocol", "grpc", "OTLP protocol: grpc or http")
	fl.BoolVar(&f.otlp.Insecure, "otlp-insecure", false, "OTLP without TLS")
	fl.StringVar(&f.pprof, "pprof", "", "write a pprof profile of the traced calls' time per stack to this file at the end (implies stack capture)")
	fl.StringVar(&f.pprofBlocked, "pprof-blocked", "", "write a pprof profile of where the traced calls waited (blocked by reason, in syscalls, runnable), under each call's stack, to this file at the end (implies --breakdown and stack capture)")
	fl.StringVar(&f.folded, "folded", "", "write folded stacks (flame graph input) with nanoseconds per stack to this file at the end (implies stack capture)")
	fl.StringArrayVar(&f.captures, "capture", nil, "`NAME=EXPR` to record as a span attribute, read at entry: an argument or field path (endpoint_id=e.ID, rev=e.policyRevision) or, without DWARF, argN+OFFSET:TYPE; repeatable")
	fl.StringArrayVar(&f.returns, "capture-return", nil, "`NAME=retN` to record as a span attribute, read at each RET: the function's N-th result from 0, an integer, bool or pointer, or without DWARF retN:TYPE, result register N; repeatable")
	fl.StringVar(&f.offsets, "offsets", "", "offsets `FILE` from 'tracer offsets', to resolve --capture on a stripped binary (alone: capture everything it lists)")
	fl.StringArrayVar(&f.presets, "preset", nil, "trace the functions of a preset (see 'tracer presets'), with its captures; repeatable")
	fl.StringVar(&f.release, "cilium-version", "", "the target's cilium release (e.g. v1.17.16) when its binary does not say: selects the presets' functions and offsets")
	return cmd
}

func runTrace(ctx context.Context, cmd *cobra.Command, f traceFlags) error {
	if len(f.funcs) == 0 && len(f.presets) == 0 {
		return errors.New("--func or --preset is required")
	}
	if len(f.captures) > 0 && len(f.funcs) == 0 {
		return errors.New("--capture applies to the --func functions: a preset has captures of its own")
	}
	if len(f.returns) > 0 && len(f.funcs) == 0 {
		return errors.New("--capture-return applies to the --func functions: a preset has captures of its own")
	}
	captures, err := withReturns(f.captures, f.returns)
	if err != nil {
		return err
	}
	f.captures = captures
	if err := checkPresets(f.presets, f.release); err != nil {
		return err
	}
	if f.sample == 0 {
		return errors.New("--sample must be at least 1")
	}
	if f.pprofBlocked != "" {
		f.breakdown = true
	}
	if f.breakdown && f.entry {
		return errors.New("--breakdown and --pprof-blocked need calls, which --entry-only does not follow")
	}
	if f.breakdownEvery <= 0 {
		return errors.New("--breakdown-every must be positive")
	}
	f.syscalls = f.syscalls || f.breakdown
	if f.syscalls && f.entry {
		return errors.New("--syscalls needs calls, which --entry-only does not follow")
	}
	if f.syscallMin <= 0 {
		return errors.New("--syscall-min must be positive")
	}
	everyProcess := f.binary != "" && f.target.PID == 0 && f.target.Process == ""
	if f.byProc && !everyProcess {
		return errors.New("--by-process needs --binary without --pid or --process: one process is traced otherwise")
	}
	var exporterCfgs []export.ExporterConfig
	switch f.output {
	case "text":
		exporterCfgs = append(exporterCfgs, export.ExporterConfig{Terminal: &export.TerminalExporterConfig{Stacks: f.stacks, Processes: everyProcess}})
	case "json":
		exporterCfgs = append(exporterCfgs, export.ExporterConfig{JSON: &export.JSONExporterConfig{}})
	case "none":
	default:
		return fmt.Errorf("unknown --output %q: want text, json or none", f.output)
	}

	offsets, err := readOffsets(f.offsets)
	if err != nil {
		return err
	}

	if f.otlp.Protocol != "grpc" && f.otlp.Protocol != "http" {
		return fmt.Errorf("unknown --otlp-protocol %q: want grpc or http", f.otlp.Protocol)
	}
	if len(f.clickhouse.Addrs) == 0 && (f.clickhouse.Cluster != "" || f.clickhouse.AddrsOrder != "") {
		return errors.New("--clickhouse-cluster and --clickhouse-addrs-order need --clickhouse")
	}
	if len(f.clickhouse.Addrs) > 0 {
		exporterCfgs = append(exporterCfgs, export.ExporterConfig{ClickHouse: &f.clickhouse})
	}
	if f.otlp.Endpoint != "" {
		exporterCfgs = append(exporterCfgs, export.ExporterConfig{OTLP: &f.otlp})
	}
	exporters, err := export.NewExporters(ctx, exporterCfgs, cmd.OutOrStdout())
	if err != nil {
		return err
	}
	for _, prof := range []struct {
		name, path string
		open       func(io.Writer) export.Exporter
	}{
		{"pprof", f.pprof, func(w io.Writer) export.Exporter { return export.NewPprofExporter(w) }},
		{"folded", f.folded, func(w io.Writer) export.Exporter { return export.NewFoldedExporter(w) }},
		{"pprof-blocked", f.pprofBlocked, func(w io.Writer) export.Exporter { return export.NewBlockedProfileExporter(w) }},
	} {
		if prof.path == "" {
			continue
		}
		// Created now, so a path that cannot be written fails before
		// anything is attached.
		file, err := os.Create(prof.path)
		if err != nil {
			return err
		}
		defer file.Close()
		exporters[prof.name] = prof.open(file)
		f.stacks = true
	}
	var (
		stderr  = cmd.ErrOrStderr()
		summary calls.Summary
		extra   = map[string]calls.Dropped{}
		pipe    *export.Pipeline
		spans   *export.SpanBuilder
		procs   processes
	)
	cfg := session.FollowConfig{
		Config:       session.Config{Binary: f.binary, Funcs: f.funcs, Stacks: f.stacks, Captures: f.captures, Offsets: offsets},
		Target:       f.target,
		Backoff:      container.DefaultBackoff,
		Once:         !f.follow,
		EveryProcess: everyProcess,
	}
	if len(f.presets) > 0 {
		spec := probeSpec{funcs: f.funcs, captures: f.captures, offsets: offsets, presets: f.presets, release: f.release}
		cfg.Resolve = func(file *symbols.File) ([]probe.Probe, []session.Refused, error) {
			return spec.resolve(stderr, file, cfg.Config.Config)
		}
	}
	if everyProcess {
		cfg.Process = func(p session.Process) {
			if p.Exited.IsZero() {
				spans.AddProcess(p.PID, p.Comm, p.ContainerID)
			}
			procs.update(p)
		}
	}
	cfg.MinDuration, cfg.SampleEvery = f.minDur, f.sample
	cfg.Announce, cfg.BreakdownEvery = f.breakdown, f.breakdownEvery
	cfg.Syscalls, cfg.SyscallMin = f.syscalls, f.syscallMin
	cfg.Detaching = detachProgress(stderr, time.Second)
	if f.entry {
		cfg.EntryOnly, cfg.Stacks = true, true
	}
	var stackCounts []session.StackCount
	hooks := session.Hooks{
		Call: func(c *calls.Call) {
			summary.Add(c)
			if f.byProc {
				procs.add(c)
			}
			pipe.Enqueue(*c)
		},
		Attached: func(s *session.Session, p container.Process, restarted bool) {
			if pipe == nil {
				// First: how the probes run on this kernel.
				fmt.Fprintf(stderr, "tracer: %s\n", kernel.Probe().Describe(s.Set.Mode()))
				if f.syscalls {
					fmt.Fprintf(stderr, "tracer: syscalls through %s\n", syscalls.Attachment)
				}
				res := export.Resource{PID: p.PID, ContainerID: p.ContainerID, GoVersion: s.File.GoVersion, HostName: export.NodeName()}
				if everyProcess {
					// Each process gets a resource of its own.
					res.PID, res.ContainerID = 0, ""
				}
				if v, _, err := presets.DetectVersion(s.File, f.release); err == nil {
					res.CiliumVersion = v.Release
				}
				spans = export.NewSpanBuilder(res)
				pipe = export.NewPipeline(spans, exporters, export.PipelineConfig{
					BatchTimeout: 100 * time.Millisecond,
					// Once per batch: the pipeline retries it.
					OnError: func(name string, err error) {
						fmt.Fprintf(stderr, "tracer: export to %s failed, will retry: %v\n", name, err)
					},
				})
			}
			for _, r := range s.Refused {
				fmt.Fprintf(stderr, "tracer: not probing %s: %v\n", r.Func, r.Reason)
			}
			if s.GoidErr != nil {
				fmt.Fprintf(stderr, "tracer: warning: goroutine IDs unknown (g=?): %v; 'tracer offsets' on an unstripped build of the same code records it\n", s.GoidErr)
			}
			if everyProcess {
				fmt.Fprintf(stderr, "tracer: tracing %d functions in every process that runs %s, %s\n", len(s.Set.Probes()), s.Binary, s.File.GoVersion)
				return
			}
			verb := "tracing"
			if restarted {
				verb = "target restarted, re-attached:"
			}
			fmt.Fprintf(stderr, "tracer: %s %d functions in %s, %s %s\n", verb, len(s.Set.Probes()), p, s.File.GoVersion, s.Binary)
		},
		Detached: func(s *session.Session, err error) {
			if errors.Is(err, session.ErrTargetExited) {
				fmt.Fprintf(stderr, "tracer: %v\n", err)
			}
			if f.entry {
				scs, err := s.EntryCounts()
				if err != nil {
					fmt.Fprintf(stderr, "tracer: %v\n", err)
				}
				stackCounts = append(stackCounts, scs...)
			}
			if n, err := s.SyscallsDropped(); err != nil {
				fmt.Fprintf(stderr, "tracer: %v\n", err)
			} else if n > 0 {
				fmt.Fprintf(stderr, "tracer: %d system calls and child processes lost to a full ring buffer\n", n)
			}
			counters, cerr := s.Counters()
			if cerr != nil {
				return
			}
			for name, c := range counters {
				d := extra[name]
				d.Dropped += c.Dropped
				d.Skipped += c.Skipped
				d.Filtered += c.Filtered
				d.Untracked += c.Untracked
				d.Contended += c.Contended
				d.Unstacked += c.Unstacked
				extra[name] = d
			}
		},
		Waiting: func(attempt int, err error, wait time.Duration) {
			if attempt == 0 {
				fmt.Fprintf(stderr, "tracer: waiting for the target to come back: %v\n", err)
			}
		},
	}

	runCtx := ctx
	if f.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	runErr := session.Follow(runCtx, cfg, hooks)
	if errors.Is(runErr, session.ErrTargetExited) {
		runErr = nil
	}
	if pipe == nil {
		return runErr
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pipeErr := pipe.Shutdown(shutCtx)
	st := pipe.Stats()
	if st.Dropped > 0 {
		fmt.Fprintf(stderr, "tracer: %d calls dropped by the export queue\n", st.Dropped)
	}
	for _, name := range slices.Sorted(maps.Keys(st.Exporters)) {
		if e := st.Exporters[name]; e.Failed+e.Dropped > 0 {
			fmt.Fprintf(stderr, "tracer: %d spans not exported to %s\n", e.Failed+e.Dropped, name)
		}
	}
	// Keep a JSON stream all JSON.
	end := cmd.OutOrStdout()
	if f.output == "json" {
		end = stderr
	}
	fmt.Fprintln(end)
	if f.entry {
		printStackCounts(end, stackCounts)
		return errors.Join(runErr, pipeErr)
	}
	if err := summary.Print(end, extra); err != nil {
		return err
	}
	if everyProcess {
		if err := procs.print(end, f.byProc); err != nil {
			return err
		}
	}
	return errors.Join(runErr, pipeErr)
}

// detachProgress says on w when removing the probes takes longer than
// after, long enough to look like a hang, and then how long it took.
func detachProgress(w io.Writer, after time.Duration) func(int) func() {
	return func(uprobes int) func() {
		var (
			mu        sync.Mutex
			announced bool
			start     = time.Now()
		)
		t := time.AfterFunc(after, func() {
			mu.Lock()
			defer mu.Unlock()
			announced = true
			fmt.Fprintf(w, "tracer: detaching %d uprobes...\n", uprobes)
		})
		return func() {
			t.Stop()
			mu.Lock()
			defer mu.Unlock()
			if announced {
				fmt.Fprintf(w, "tracer: detached %d uprobes in %.1fs\n", uprobes, time.Since(start).Seconds())
			}
		}
	}
}

// printStackCounts prints each stack with its count, most frequent first,
// like bpftrace's @[ustack] = count() but with the immediate caller and
// inlined frames.
func printStackCounts(w io.Writer, scs []session.StackCount) {
	for _, sc := range scs {
		fmt.Fprintf(w, "%d calls of %s\n", sc.Count, sc.Func)
		for _, fr := range sc.Stack {
			inl := ""
			if fr.Inlined {
				inl = " (inlined)"
			}
			fmt.Fprintf(w, "    %s%s\n        %s:%d\n", fr.Func, inl, fr.File, fr.Line)
		}
	}
}
