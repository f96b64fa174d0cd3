package probe

import (
	"fmt"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The limit is on uprobes as well as functions, and the refusal names both
// counts; nothing is loaded or attached before it.
func TestAttachLimits(t *testing.T) {
	fn := func(i, rets int) Probe {
		p := Probe{Func: symbols.Func{Name: fmt.Sprintf("f%d", i), Offset: uint64(i) << 12}}
		for r := range rets {
			p.Returns = append(p.Returns, p.Func.Offset+uint64(r+1))
		}
		return p
	}
	many := func(n, rets int) []Probe {
		ps := make([]Probe, n)
		for i := range ps {
			ps[i] = fn(i, rets)
		}
		return ps
	}
	entryOnly := many(MaxProbes, 30)
	for i := range entryOnly {
		entryOnly[i].EntryOnly = true
	}
	for _, tc := range []struct {
		name   string
		probes []Probe
		want   string
	}{
		{"functions", many(1200, 1), "1200 functions with 2400 uprobes to probe, at most 1024 functions and 4096 uprobes"},
		{"uprobes", many(800, 5), "800 functions with 4800 uprobes to probe, at most 1024 functions and 4096 uprobes"},
		{"uprobes of huge functions", many(2, 3000), "2 functions with 6002 uprobes to probe, at most 1024 functions and 4096 uprobes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Attach(tc.probes, Options{Binary: "/nonexistent"})
			if err == nil || err.Error() != tc.want {
				t.Errorf("Attach: %v, want %q", err, tc.want)
			}
		})
	}
	// Add counts the uprobes already attached and its probe's.
	s := &Set{}
	if _, err := s.Add(fn(0, 5000)); err == nil || err.Error() != "f0: 1 functions with 5001 uprobes to probe, at most 1024 functions and 4096 uprobes" {
		t.Errorf("Add: %v", err)
	}
	// Entry-only probes have no RET uprobes: the limit does not count
	// what they do not attach.
	if n := countUprobes(entryOnly); n != MaxProbes {
		t.Errorf("%d entry-only probes count %d uprobes", MaxProbes, n)
	}
}

// Without attach cookies the address of a site names its probe: a function
// cannot be probed twice.
func TestCheckSites(t *testing.T) {
	f := Probe{Func: symbols.Func{Name: "f", Offset: 0x1000}}
	g := Probe{Func: symbols.Func{Name: "g", Offset: 0x2000}}
	if err := checkSites([]Probe{f, g}); err != nil {
		t.Error(err)
	}
	if err := checkSites([]Probe{f, g, f}); err == nil || err.Error() != "f: probed twice (probes 0 and 2), which needs attach cookies (Linux 5.15)" {
		t.Errorf("checkSites: %v", err)
	}
}
