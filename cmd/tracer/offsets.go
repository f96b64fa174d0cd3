package main

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

type offsetsFlags struct {
	binary   string
	funcs    []string
	captures []string
	returns  []string
	output   string
}

func offsetsCmd() *cobra.Command {
	var f offsetsFlags
	cmd := &cobra.Command{
		Use:   "offsets --binary UNSTRIPPED [--func PATTERN... --capture NAME=EXPR...] [-o FILE]",
		Short: "Resolve --capture expressions on an unstripped build, for tracing the stripped build of the same code",
		Long: `Release cilium-agent images are stripped: no DWARF, so no argument or field
names. Build the same version unstripped (NOSTRIP=1), run this on it, and pass
the file to 'tracer trace --offsets'. The file is tied to the build by a
fingerprint that stripping does not change; a file from another build is
refused. It also records the offset of the goroutine ID in runtime.g, which
gives goroutine IDs on a stripped build of a Go release the tracer does not
know (without captures, that is all it holds).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOffsets(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.binary, "binary", "", "unstripped executable (with DWARF) of the same build")
	fl.StringArrayVar(&f.funcs, "func", nil, "function name or glob, repeatable")
	fl.StringArrayVar(&f.captures, "capture", nil, "`NAME=EXPR` as for 'tracer trace', repeatable")
	fl.StringArrayVar(&f.returns, "capture-return", nil, "`NAME=retN` as for 'tracer trace', repeatable")
	fl.StringVarP(&f.output, "output", "o", "", "file to write (default: standard output)")
	return cmd
}

func runOffsets(cmd *cobra.Command, f offsetsFlags) error {
	captures, err := withReturns(f.captures, f.returns)
	if err != nil {
		return err
	}
	f.captures = captures
	switch {
	case f.binary == "":
		return errors.New("--binary is required")
	case len(f.captures) > 0 && len(f.funcs) == 0:
		return errors.New("--capture needs --func")
	case len(f.funcs) > 0 && len(f.captures) == 0:
		return errors.New("--func needs --capture")
	}
	bin, err := symbols.Open(f.binary)
	if err != nil {
		return err
	}
	defer bin.Close()
	if !bin.HasDWARF {
		return fmt.Errorf("%s: %w", f.binary, args.ErrNoDWARF)
	}
	var fns []symbols.Func
	for _, pat := range f.funcs {
		m, err := bin.Funcs(pat)
		if err != nil {
			return err
		}
		fns = append(fns, m...)
	}
	var pairs [][2]string
	for _, c := range f.captures {
		name, expr, err := args.ParseCaptureFlag(c)
		if err != nil {
			return err
		}
		pairs = append(pairs, [2]string{name, expr})
	}
	o, err := offsets.New(bin, fns, pairs)
	if err != nil {
		return err
	}
	if f.output == "" {
		return o.Write(cmd.OutOrStdout())
	}
	out, err := os.Create(f.output)
	if err != nil {
		return err
	}
	if err := o.Write(out); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "tracer: wrote %d captures for %d functions and goid offset %d to %s\n", countCaptures(o), len(o.Funcs), o.GoidOffset, f.output)
	return nil
}

func countCaptures(o *offsets.File) int {
	n := 0
	for _, cs := range o.Funcs {
		n += len(cs)
	}
	return n
}

// withReturns checks the --capture-return values, NAME=retN, and returns
// them after the --capture values: one resolver reads both.
func withReturns(captures, returns []string) ([]string, error) {
	for _, s := range returns {
		if err := args.ParseReturnFlag(s); err != nil {
			return nil, err
		}
	}
	return append(slices.Clone(captures), returns...), nil
}

// readOffsets reads the offsets file at path; "" means none.
func readOffsets(path string) (*offsets.File, error) {
	if path == "" {
		return nil, nil
	}
	return offsets.Open(path)
}
