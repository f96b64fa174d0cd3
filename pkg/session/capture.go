package session

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// ResolveCaptures sets the captures of the probes from exprs, each
// "NAME=EXPR". An expression in the raw form (argN+OFFSET:TYPE) is used as
// written; any other is resolved from the executable's DWARF or, for a
// stripped executable, looked up in offsets. A capture applies to every
// probed function that has the argument it names, so one set of captures
// serves functions with different parameters; one that no function has, a
// missing field, or an unsupported type is an error. With no exprs, the
// probes capture whatever the offsets file o lists for their functions. o
// may be nil; if not, it must have been generated from a build of the same
// code as f. An expression retN captures a result at each RET (see
// args.CaptureResolver.ResolveReturn). Every probe of a function whose last
// result is error also reports the error it returns (see AddErrorResults).
func ResolveCaptures(f *symbols.File, probes []probe.Probe, exprs []string, o *offsets.File) error {
	if o != nil {
		if err := o.Check(f); err != nil {
			return err
		}
	}
	type namedExpr struct{ name, expr string }
	var parsed []namedExpr
	for _, s := range exprs {
		name, expr, err := args.ParseCaptureFlag(s)
		if err != nil {
			return err
		}
		for _, p := range parsed {
			if p.name == name {
				return fmt.Errorf("capture %s given twice", name)
			}
		}
		parsed = append(parsed, namedExpr{name, expr})
	}
	for i := range probes {
		probes[i].Captures = nil
		if len(parsed) == 0 && o != nil {
			probes[i].Captures = o.Funcs[probes[i].Func.Name]
		}
	}
	fns := make([]symbols.Func, len(probes))
	for i, p := range probes {
		fns[i] = p.Func
	}
	r := args.NewCaptureResolver(f, fns)
	for _, ne := range parsed {
		var missing error
		found := false
		for i := range probes {
			p := &probes[i]
			c, err := resolveCapture(f, r, p.Func, ne.name, ne.expr, o)
			var ce *args.CaptureError
			var re *args.ResultError
			switch {
			case errors.As(err, &ce) && !ce.Field, errors.As(err, &re), errors.Is(err, offsets.ErrNotInFile):
				missing = cmp.Or(missing, err)
				continue
			case err != nil:
				return fmt.Errorf("%s: %w", p.Func.Name, err)
			}
			found = true
			p.Captures = append(p.Captures, c)
		}
		if !found && missing != nil {
			return missing
		}
	}
	for _, p := range probes {
		if n := probe.Values(p.Captures); n > probe.MaxCaptures {
			return fmt.Errorf("%s: %d captures, at most %d", p.Func.Name, n, probe.MaxCaptures)
		}
	}
	var known ErrorResults
	if o != nil {
		known = o
	}
	AddErrorResults(f, r, probes, known)
	return nil
}

// ErrorResults give the error results of a stripped executable's
// functions, by name: an offsets file has them (offsets.File), and so does
// a preset selection, from the presets' catalogue (presets.Selection).
type ErrorResults interface {
	ErrorResult(fn string) (args.Capture, bool)
}

// AddErrorResults adds, to each probe of a function whose last result is
// error, the capture of that result (args.KindError), which makes the
// probes report the errors the function returns: from DWARF, or on a
// stripped executable from known (nil: none). r may be nil. The error
// result takes none of the probe's MaxCaptures values; it goes last, where
// the probes want it, also when a capture named it (retN:error).
func AddErrorResults(f *symbols.File, r *args.CaptureResolver, probes []probe.Probe, known ErrorResults) {
	if r == nil && f.HasDWARF {
		fns := make([]symbols.Func, len(probes))
		for i, p := range probes {
			fns[i] = p.Func
		}
		r = args.NewCaptureResolver(f, fns)
	}
	for i := range probes {
		p := &probes[i]
		if k := slices.IndexFunc(p.Captures, isError); k >= 0 {
			p.Captures = slices.Concat(p.Captures[:k], p.Captures[k+1:], p.Captures[k:k+1])
			continue
		}
		if p.EntryOnly {
			continue
		}
		switch {
		case f.HasDWARF:
			// A function whose results DWARF does not give (no entry
			// for it) is traced without its errors: nothing asked for.
			if c, ok, err := r.ErrorResult(p.Func); err == nil && ok {
				p.Captures = append(p.Captures, c)
			}
		case known != nil:
			if c, ok := known.ErrorResult(p.Func.Name); ok {
				p.Captures = append(p.Captures, c)
			}
		}
	}
}

func isError(c args.Capture) bool { return c.Kind == args.KindError }

func resolveCapture(f *symbols.File, r *args.CaptureResolver, fn symbols.Func, name, expr string, o *offsets.File) (args.Capture, error) {
	if args.IsRawCapture(expr) || f.HasDWARF || o == nil {
		return r.Resolve(fn, name, expr)
	}
	c, err := o.Lookup(fn.Name, name)
	if err != nil {
		return c, err
	}
	if c.Expr != expr {
		return c, fmt.Errorf("capture %s: the offsets file resolves it as %q, not %q", name, c.Expr, expr)
	}
	return c, nil
}
