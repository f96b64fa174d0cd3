package main

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

func symbolsCmd() *cobra.Command {
	var (
		binary  string
		pid     int
		funcs   []string
		spec    probeSpec
		offsets string
	)
	cmd := &cobra.Command{
		Use:   "symbols (--binary PATH | --pid PID) (--func PATTERN | --preset NAME)...",
		Short: "Show what trace would attach: addresses, file offsets, RET offsets, refusals, captures",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(funcs) == 0 && len(spec.presets) == 0 {
				return errors.New("--func or --preset is required")
			}
			if err := checkPresets(spec.presets, spec.release); err != nil {
				return err
			}
			path, err := binaryPath(binary, pid)
			if err != nil {
				return err
			}
			if spec.offsets, err = readOffsets(offsets); err != nil {
				return err
			}
			f, err := symbols.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			spec.funcs = funcs
			probes, refused, err := spec.resolve(cmd.ErrOrStderr(), f, probe.Config{})
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
			// With presets, what each function captures comes before
			// the RET offsets, which can be long.
			withCaptures := len(spec.presets) > 0
			if withCaptures {
				fmt.Fprintln(tw, "FUNCTION\tENTRY\tOFFSET\tSIZE\tCAPTURES\tRET OFFSETS")
			} else {
				fmt.Fprintln(tw, "FUNCTION\tENTRY\tOFFSET\tSIZE\tRET OFFSETS")
			}
			for _, p := range probes {
				fmt.Fprintf(tw, "%s\t%#x\t%#x\t%d\t", p.Func.Name, p.Func.Entry, p.Func.Offset, p.Func.End-p.Func.Entry)
				if withCaptures {
					fmt.Fprintf(tw, "%s\t", cmp.Or(captureList(p.Captures), "-"))
				}
				fmt.Fprintln(tw, hexList(p.Returns))
			}
			for _, r := range refused {
				fmt.Fprintf(tw, "%s\t\t\t\t", r.Func)
				if withCaptures {
					fmt.Fprint(tw, "\t")
				}
				fmt.Fprintf(tw, "REFUSED: %v\n", r.Reason)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&binary, "binary", "", "path of a Go executable")
	cmd.Flags().IntVar(&pid, "pid", 0, "PID of a running Go process")
	cmd.Flags().StringArrayVar(&funcs, "func", nil, "function name or glob (`*` and `?`; `(*` is literal), repeatable")
	cmd.Flags().StringArrayVar(&spec.presets, "preset", nil, "the functions of a preset (see 'tracer presets'), with its captures; repeatable")
	cmd.Flags().StringVar(&spec.release, "cilium-version", "", "the binary's cilium release (e.g. v1.17.16) when it does not say")
	cmd.Flags().StringVar(&offsets, "offsets", "", "offsets `FILE` from 'tracer offsets': the presets' captures on a stripped binary")
	return cmd
}

// captureList shows captures as NAME=WHERE, where is the raw form the
// probes read: what a preset resolved, from DWARF or from its catalogue.
func captureList(cs []args.Capture) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Name + "=" + c.Raw()
	}
	return strings.Join(parts, ",")
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
