package kernel

import (
	"errors"
	"fmt"
	"os"
)

// Mode is how the probes run.
type Mode struct {
	// Multi attaches each group of sites through one uprobe_multi link
	// (Linux 6.6, with a PID filter by process since 6.10): fast to
	// attach and detach. Otherwise each site is a perf uprobe of its own.
	Multi bool
	// Cookies: each site's attach cookie is its probe ID (Linux 5.15).
	// Without them the BPF programs look the probe up by the probed
	// address, and the object built for older kernels runs (LEGACY in
	// bpf/uprobes).
	Cookies bool
}

func (m Mode) String() string {
	switch {
	case m.Multi:
		return "uprobe_multi"
	case m.Cookies:
		return "perf uprobes, cookies"
	}
	return "perf uprobes, no cookies"
}

// Mode chooses the fastest mode the kernel supports. It fails, naming the
// feature and the release that has it, when a required check failed.
func (f Features) Mode() (Mode, error) {
	for _, c := range f.Checks {
		if c.Required && !c.OK() {
			return Mode{}, c.missing(f.Release)
		}
	}
	// A kernel with cookies and without pointer arguments of global
	// functions is no mainline release; the legacy object serves it.
	m := Mode{Cookies: f.Has(AttachCookies) && f.Has(GlobalFuncPtrs)}
	m.Multi = m.Cookies && f.Has(UprobeMulti) && f.Has(UprobeMultiPIDs)
	return m, nil
}

// Allows checks that the kernel can run mode m: tests force the fallback
// modes on a kernel that has everything.
func (f Features) Allows(m Mode) error {
	need := []string{}
	if m.Cookies {
		need = append(need, AttachCookies, GlobalFuncPtrs)
	}
	if m.Multi {
		if !m.Cookies {
			return fmt.Errorf("%s: uprobe_multi needs cookies", m)
		}
		need = append(need, UprobeMulti, UprobeMultiPIDs)
	}
	for _, c := range f.Checks {
		if c.Required {
			need = append(need, c.Name)
		}
	}
	if err := f.Require(need...); err != nil {
		return fmt.Errorf("%s: %w", m, err)
	}
	return nil
}

// Require fails, naming the first missing feature and the release that
// has it, unless the kernel has every feature named.
func (f Features) Require(names ...string) error {
	for _, name := range names {
		if c := f.check(name); !c.OK() {
			return c.missing(f.Release)
		}
	}
	return nil
}

// Describe names mode m and the kernel: what the first line of a trace
// says. It tells why uprobe_multi is not used on a kernel that has it, and
// what the kernel could run if m is not its best.
func (f Features) Describe(m Mode) string {
	s := fmt.Sprintf("%s (Linux %s", m, f.Release)
	if best, err := f.Mode(); err == nil && best != m {
		s += ", which can run " + best.String()
	} else if !m.Multi && f.Has(UprobeMulti) && !f.Has(UprobeMultiPIDs) {
		s += ", whose uprobe_multi filters PIDs by thread"
	}
	return s + ")"
}

// missing says that the kernel lacks c, or that checking it failed.
func (c Check) missing(release string) error {
	if c.Missing() {
		return fmt.Errorf("Linux %s has no %s (Linux %s has)", release, c.Name, c.Min)
	}
	if errors.Is(c.Err, os.ErrPermission) {
		return fmt.Errorf("checking for %s: %w (needs root, or CAP_BPF and CAP_PERFMON)", c.Name, c.Err)
	}
	return fmt.Errorf("checking for %s (Linux %s): %w", c.Name, c.Min, c.Err)
}
