package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/probe"
)

func doctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this node's kernel and this process's privileges let the tracer work",
		Long: `Check what an operator must know before tracing on a node: the kernel
release and each BPF feature the tracer depends on, with the first Linux
release that has it; the capabilities held and missing; whether
panic_on_warn, lockdown or perf_event_paranoid get in the way; the mode
the probes will run in. It loads the BPF programs and attaches one uprobe
to its own executable, as tracing would. Run it with the privileges the
tracer will have. It exits non-zero, with the reason, if tracing cannot
work.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := probe.Diagnose()
			printDiagnosis(cmd.OutOrStdout(), d)
			if err := d.Err(); err != nil {
				return fmt.Errorf("tracing cannot work: %w", err)
			}
			return nil
		},
	}
}

func printDiagnosis(w io.Writer, d probe.Diagnosis) {
	fmt.Fprintf(w, "kernel: Linux %s\n\nfeatures:\n", d.Features.Release)
	for _, c := range d.Features.Checks {
		state := "ok"
		switch {
		case c.OK():
		case c.Missing():
			state = "missing"
		default:
			state = "unknown"
		}
		need := "optional"
		if c.Required {
			need = "required"
		}
		fmt.Fprintf(w, "  %-8s %s (Linux %s, %s)", state, c.Name, c.Min, need)
		if !c.OK() {
			fmt.Fprintf(w, ": %v", c.Err)
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "\ncapabilities:")
	if d.CapErr != nil {
		fmt.Fprintf(w, "  unknown: %v\n", d.CapErr)
	}
	for _, c := range d.Capabilities {
		state := "held"
		switch {
		case c.Held:
		case c.Needed:
			state = "missing"
		default:
			state = "unneeded"
		}
		fmt.Fprintf(w, "  %-8s %s: %s\n", state, c.Name, c.For)
	}

	fmt.Fprintln(w, "\nsettings:")
	for _, s := range d.Settings {
		if s.Err != nil {
			fmt.Fprintf(w, "  %s: unknown (%v)", s.Name, s.Err)
		} else {
			fmt.Fprintf(w, "  %s = %s", s.Name, s.Value)
		}
		if s.Note != "" {
			fmt.Fprintf(w, ": %s", s.Note)
		}
		fmt.Fprintln(w)
	}
	if d.Memlock != nil {
		fmt.Fprintf(w, "  RLIMIT_MEMLOCK: BPF memory counts against it (Linux < 5.11) and it cannot be raised: %v\n", d.Memlock)
	}

	fmt.Fprintln(w)
	if d.ModeErr != nil {
		fmt.Fprintf(w, "mode: none: %v\n", d.ModeErr)
		return
	}
	fmt.Fprintf(w, "mode: %s\n", d.Features.Describe(d.Mode))
	fmt.Fprintf(w, "load BPF programs: %s\n", okOr(d.Load))
	fmt.Fprintf(w, "attach a uprobe: %s\n", okOr(d.Attach))
}

func okOr(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}
