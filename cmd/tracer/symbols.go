package main

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

func symbolsCmd() *cobra.Command {
	var (
		binary string
		pid    int
		funcs  []string
	)
	cmd := &cobra.Command{
		Use:   "symbols (--binary PATH | --pid PID) --func PATTERN...",
		Short: "Show what trace would attach: addresses, file offsets, RET offsets, refusals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(funcs) == 0 {
				return errors.New("--func is required")
			}
			path, err := binaryPath(binary, pid)
			if err != nil {
				return err
			}
			f, err := symbols.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			probes, refused, err := session.Resolve(f, funcs, probe.Config{})
			if err != nil && len(refused) == 0 {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: %s %s", path, f.GoVersion, f.Arch)
			if f.PIE {
				fmt.Fprint(w, " pie")
			}
			if f.Stripped {
				fmt.Fprint(w, " stripped")
			}
			fmt.Fprintln(w)
			tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "FUNCTION\tENTRY\tOFFSET\tSIZE\tRET OFFSETS")
			for _, p := range probes {
				fmt.Fprintf(tw, "%s\t%#x\t%#x\t%d\t%s\n", p.Func.Name, p.Func.Entry, p.Func.Offset,
					p.Func.End-p.Func.Entry, hexList(p.Returns))
			}
			for _, r := range refused {
				fmt.Fprintf(tw, "%s\t\t\t\tREFUSED: %v\n", r.Func, r.Reason)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "path of a Go executable")
	cmd.Flags().IntVar(&pid, "pid", 0, "PID of a running Go process")
	cmd.Flags().StringArrayVar(&funcs, "func", nil, "function name or glob (`*` and `?`; `(*` is literal), repeatable")
	return cmd
}

func binaryPath(binary string, pid int) (string, error) {
	switch {
	case binary != "" && pid != 0:
		return binary, nil
	case binary != "":
		return binary, nil
	case pid > 0:
		return fmt.Sprintf("/proc/%d/exe", pid), nil
	case pid < 0:
		return "", fmt.Errorf("invalid PID %d", pid)
	}
	return "", errors.New("--binary or --pid is required")
}

func hexList(offs []uint64) string {
	s := ""
	for i, o := range offs {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%#x", o)
	}
	return s
}
