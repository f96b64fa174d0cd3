package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/export"
	"github.com/cilium-tracer/tracer/pkg/session"
)

type traceFlags struct {
	target   container.Selector
	binary   string
	funcs    []string
	duration time.Duration
	minDur   time.Duration
	sample   uint32
	output   string
	stacks   bool
}

func traceCmd() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace [--pid PID | --container NAME | --process NAME] --func PATTERN...",
		Short: "Trace calls live and print a per-function summary at the end",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd.Context(), cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.target.PID, "pid", 0, "host PID of the target")
	fl.StringVar(&f.target.Container, "container", "", "Docker container name or ID of the target")
	fl.StringVar(&f.target.Process, "process", "", "process name to find in /proc (default: find cilium-agent)")
	fl.StringVar(&f.binary, "binary", "", "executable to read symbols from and attach to (default: the target's, through /proc/PID/root)")
	fl.StringArrayVar(&f.funcs, "func", nil, "function name or glob (`*` and `?`; `(*` is literal), repeatable")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (default: until interrupted or the target exits)")
	fl.DurationVar(&f.minDur, "min-duration", 0, "report only calls at least this long (filtered in BPF)")
	fl.Uint32Var(&f.sample, "sample", 1, "trace one call in N, chosen at random in BPF")
	fl.StringVar(&f.output, "output", "text", "live output: text, json or none")
	fl.BoolVar(&f.stacks, "stacks", false, "capture and print the caller stack of each call")
	return cmd
}

func runTrace(ctx context.Context, cmd *cobra.Command, f traceFlags) error {
	if len(f.funcs) == 0 {
		return errors.New("--func is required")
	}
	if f.sample == 0 {
		return errors.New("--sample must be at least 1")
	}
	var live export.Exporter
	switch f.output {
	case "text":
		live = export.NewTextExporter(cmd.OutOrStdout(), f.stacks)
	case "json":
		live = export.NewJSONExporter(cmd.OutOrStdout())
	case "none":
	default:
		return fmt.Errorf("unknown --output %q: want text, json or none", f.output)
	}

	proc, err := container.Resolve(ctx, f.target)
	if err != nil {
		return err
	}
	cfg := session.Config{
		PID:    proc.PID,
		Binary: firstNonEmpty(f.binary, proc.Binary),
		Funcs:  f.funcs,
		Stacks: f.stacks,
	}
	cfg.MinDuration, cfg.SampleEvery = f.minDur, f.sample
	s, err := session.Start(cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, r := range s.Refused {
		fmt.Fprintf(cmd.ErrOrStderr(), "tracer: not probing %s: %v\n", r.Func, r.Reason)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "tracer: tracing %d functions in PID %d (%s, %s)\n",
		len(s.Set.Probes()), proc.PID, s.File.GoVersion, proc.Binary)

	exporters := map[string]export.Exporter{}
	if live != nil {
		exporters["terminal"] = live
	}
	res := export.Resource{PID: proc.PID, ContainerID: proc.ContainerID, GoVersion: s.File.GoVersion}
	res.HostName, _ = os.Hostname()
	pipe := export.NewPipeline(export.NewSpanBuilder(res), exporters, export.PipelineConfig{BatchTimeout: 100 * time.Millisecond})

	runCtx := ctx
	if f.duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	runErr := s.Run(runCtx, func(c *calls.Call) { pipe.Enqueue(*c) })
	if errors.Is(runErr, session.ErrTargetExited) {
		fmt.Fprintf(cmd.ErrOrStderr(), "tracer: %v\n", runErr)
		runErr = nil
	}

	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pipeErr := pipe.Shutdown(shutCtx)

	counters, err := s.Counters()
	if err != nil {
		return err
	}
	extra := map[string]calls.Dropped{}
	for name, c := range counters {
		extra[name] = calls.Dropped{Dropped: c.Dropped, Skipped: c.Skipped, Filtered: c.Filtered, Untracked: c.Untracked}
	}
	if st := pipe.Stats(); st.Dropped > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "tracer: %d calls dropped by the export queue\n", st.Dropped)
	}
	fmt.Fprintln(cmd.OutOrStdout())
	if err := s.Summary.Print(cmd.OutOrStdout(), extra); err != nil {
		return err
	}
	return errors.Join(runErr, pipeErr)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
