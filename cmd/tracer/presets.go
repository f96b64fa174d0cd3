package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/session"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

func presetsCmd() *cobra.Command {
	var (
		binary  string
		pid     int
		release string
	)
	cmd := &cobra.Command{
		Use:   "presets [--binary PATH | --pid PID] [--cilium-version VERSION]",
		Short: "List the presets: named sets of cilium-agent functions to trace, with the values to capture on them",
		Long: `List the presets, one line each: its name, how many functions it traces in
the cilium release, and what it traces. The release is read from the
binary given (its -ldflags, else its main module version), or set with
--cilium-version; without either, the newest presets are listed.
Trace them with 'tracer trace --preset NAME' (repeatable, with --func too),
see what they would attach with 'tracer symbols --preset NAME'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := presets.Version{Minor: presets.Newest()}
			var warnings []string
			switch {
			case binary != "" || pid != 0:
				path, err := binaryPath(binary, pid)
				if err != nil {
					return err
				}
				f, err := symbols.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if v, warnings, err = presets.DetectVersion(f, release); err != nil {
					return err
				}
			case release != "":
				var err error
				if v, warnings, err = presets.DetectVersion(nil, release); err != nil {
					return err
				}
			}
			for _, w := range warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "tracer: warning: %s\n", w)
			}
			w := cmd.OutOrStdout()
			switch {
			case v.Release != "":
				fmt.Fprintf(w, "presets of cilium %s, for %s\n", v.Minor, v)
			case len(warnings) > 0:
				fmt.Fprintf(w, "presets of cilium %s (the newest: the release is unknown)\n", v.Minor)
			default:
				fmt.Fprintf(w, "presets of cilium %s (the newest; --binary, --pid or --cilium-version selects a release)\n", v.Minor)
			}
			tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "PRESET\tFUNCTIONS\tTRACES")
			for _, p := range presets.All {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", p.Name, len(p.For(v.Minor)), p.Description)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&binary, "binary", "", "a cilium-agent executable, whose release selects the presets")
	fl.IntVar(&pid, "pid", 0, "a running cilium-agent, whose release selects the presets")
	fl.StringVar(&release, "cilium-version", "", "the cilium release, e.g. v1.17.16, for binaries that do not say")
	return cmd
}

// checkPresets refuses unknown preset names and a malformed release before
// anything is opened.
func checkPresets(names []string, release string) error {
	for _, n := range names {
		if _, err := presets.Lookup(n); err != nil {
			return err
		}
	}
	if release != "" {
		if _, err := presets.ParseRelease(release); err != nil {
			return err
		}
	}
	return nil
}

// What a session traces: --func patterns with their --capture values, and
// presets.
type probeSpec struct {
	funcs    []string
	captures []string
	offsets  *offsets.File
	presets  []string
	release  string // --cilium-version
}

// resolve finds the probes of the --func patterns, then those of the
// presets that --func did not already choose, and says on w which cilium
// release the presets are for and what they cannot trace.
func (s probeSpec) resolve(w io.Writer, f *symbols.File, c probe.Config) ([]probe.Probe, []session.Refused, error) {
	var (
		probes  []probe.Probe
		refused []session.Refused
	)
	if len(s.funcs) > 0 {
		var err error
		if probes, refused, err = session.Resolve(f, s.funcs, c); err != nil {
			// The refusals say why: symbols lists them.
			return nil, refused, err
		}
		if err := session.ResolveCaptures(f, probes, s.captures, s.offsets); err != nil {
			return nil, nil, err
		}
	}
	if len(s.presets) == 0 {
		return probes, refused, nil
	}
	sel, err := presets.Select(f, s.presets, presets.Options{Release: s.release, Offsets: s.offsets})
	if err != nil {
		return nil, nil, err
	}
	printSelection(w, s.presets, sel)
	ps, rs, err := session.ResolvePresets(f, sel, c)
	refused = append(refused, rs...)
	if err != nil && len(rs) == 0 {
		return nil, refused, err
	}
	// A function --func chose too keeps its own probe, to which the
	// preset adds the captures of names --capture did not use.
	byEntry := map[uint64]int{}
	for i, p := range probes {
		byEntry[p.Func.Entry] = i
	}
	for _, p := range ps {
		i, ok := byEntry[p.Func.Entry]
		if !ok {
			probes = append(probes, p)
			continue
		}
		for _, c := range p.Captures {
			have := probes[i].Captures
			switch {
			case slices.ContainsFunc(have, func(h args.Capture) bool {
				return h.Name == c.Name || h.Kind == args.KindError && c.Kind == args.KindError
			}):
			case c.Kind == args.KindError:
				probes[i].Captures = append(slices.Clip(have), c)
			case probe.Values(have) == probe.MaxCaptures:
				fmt.Fprintf(w, "tracer: warning: %s: not capturing %s for the preset: --capture took all %d captures\n", p.Func.Name, c.Name, probe.MaxCaptures)
			default:
				// Before the error result, which stays last.
				probes[i].Captures = slices.Insert(slices.Clip(have), probe.Values(have), c)
			}
		}
	}
	if len(probes) == 0 {
		return nil, refused, errors.New("no function of the presets can be probed in this binary")
	}
	return probes, refused, nil
}

// printSelection says which release the presets are for, and each warning,
// one line each.
func printSelection(w io.Writer, names []string, sel *presets.Selection) {
	n := 0
	for _, fn := range sel.Funcs {
		n += len(fn.Captures)
	}
	fmt.Fprintf(w, "tracer: presets %s for %s: %d functions, %d captures\n", strings.Join(names, ", "), sel.Version, len(sel.Funcs), n)
	for _, warn := range sel.Warnings {
		fmt.Fprintf(w, "tracer: warning: %s\n", warn)
	}
}
