package session

import (
	"fmt"

	"github.com/cilium-tracer/tracer/pkg/presets"
	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// ResolvePresets finds the probes of the functions presets selected in f,
// as Resolve does (a function whose body cannot be probed safely is
// refused), each with the captures the selection resolved for it and its
// error result (see AddErrorResults: from DWARF, or the selection's).
func ResolvePresets(f *symbols.File, sel *presets.Selection, c probe.Config) ([]probe.Probe, []Refused, error) {
	if len(sel.Funcs) == 0 {
		return nil, nil, nil
	}
	probes, refused, err := Resolve(f, sel.Names(), c)
	if err != nil {
		return nil, refused, err
	}
	for i := range probes {
		p := &probes[i]
		p.Captures = sel.Captures(p.Func.Name)
		if n := probe.Values(p.Captures); n > probe.MaxCaptures {
			return nil, nil, fmt.Errorf("%s: %d captures, at most %d", p.Func.Name, n, probe.MaxCaptures)
		}
	}
	AddErrorResults(f, nil, probes, sel)
	return probes, refused, nil
}
