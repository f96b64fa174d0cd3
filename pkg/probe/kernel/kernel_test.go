package kernel_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

// version parses the major and minor numbers of a release: "6.18.44-fc"
// gives 6, 18.
func version(t *testing.T, release string) [2]int {
	t.Helper()
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("release %q: no major.minor", release)
	}
	var v [2]int
	for i := range v {
		n, err := strconv.Atoi(strings.TrimRightFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' }))
		if err != nil {
			t.Fatalf("release %q: %v", release, err)
		}
		v[i] = n
	}
	return v
}

func older(a, b [2]int) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// Every check whose feature is older than the running kernel must pass;
// newer ones may be missing, never fail to run.
func TestProbe(t *testing.T) {
	f := kernel.Probe()
	running := version(t, f.Release)
	if len(f.Checks) == 0 {
		t.Fatal("no checks")
	}
	for _, c := range f.Checks {
		t.Logf("%-45s Linux %-5s required=%-5v err=%v", c.Name, c.Min, c.Required, c.Err)
		if c.Err != nil && !errors.Is(c.Err, ebpf.ErrNotSupported) {
			t.Errorf("%s: the check failed: %v", c.Name, c.Err)
		}
		if !c.OK() && !older(running, version(t, c.Min)) {
			t.Errorf("%s: missing on Linux %s, though Linux %s has it", c.Name, f.Release, c.Min)
		}
	}
	m, err := f.Mode()
	if err != nil {
		t.Fatal(err)
	}
	t.Log(f.Describe(m))
}

// kernelLike returns the features of a kernel that has every check except
// those named.
func kernelLike(release string, missing ...string) kernel.Features {
	full := kernel.Probe()
	f := kernel.Features{Release: release}
	for _, c := range full.Checks {
		c.Err = nil
		for _, m := range missing {
			if c.Name == m {
				c.Err = fmt.Errorf("%w (simulated)", ebpf.ErrNotSupported)
			}
		}
		f.Checks = append(f.Checks, c)
	}
	return f
}

func TestMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    kernel.Features
		want kernel.Mode
		desc string
	}{
		{"6.12", kernelLike("6.12.117"), kernel.Mode{Multi: true, Cookies: true}, "uprobe_multi (Linux 6.12.117)"},
		// No buggy kernel is at hand: the detection's result is
		// simulated.
		{"6.8, uprobe_multi PID filter by thread", kernelLike("6.8.0", kernel.UprobeMultiPIDs), kernel.Mode{Cookies: true},
			"perf uprobes, cookies (Linux 6.8.0, whose uprobe_multi filters PIDs by thread)"},
		{"6.1", kernelLike("6.1.192", kernel.UprobeMulti, kernel.UprobeMultiPIDs), kernel.Mode{Cookies: true}, "perf uprobes, cookies (Linux 6.1.192)"},
		{"5.10", kernelLike("5.10.251", kernel.UprobeMulti, kernel.UprobeMultiPIDs, kernel.AttachCookies, kernel.GlobalFuncPtrs), kernel.Mode{},
			"perf uprobes, no cookies (Linux 5.10.251)"},
		{"5.13", kernelLike("5.13.0", kernel.UprobeMulti, kernel.UprobeMultiPIDs, kernel.AttachCookies), kernel.Mode{}, "perf uprobes, no cookies (Linux 5.13.0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.f.Mode()
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Errorf("mode %+v, want %+v", m, tc.want)
			}
			if err := tc.f.Allows(m); err != nil {
				t.Errorf("the chosen mode is not allowed: %v", err)
			}
			if d := tc.f.Describe(m); d != tc.desc {
				t.Errorf("Describe: %q, want %q", d, tc.desc)
			}
		})
	}
}

// A kernel without something the tracer cannot do without: one line naming
// the feature and the release that has it.
func TestModeRequired(t *testing.T) {
	_, err := kernelLike("5.4.0", kernel.RingBuffer, kernel.UprobeMulti).Mode()
	if err == nil || err.Error() != "Linux 5.4.0 has no BPF ring buffer (Linux 5.8 has)" {
		t.Errorf("got %v", err)
	}
}

func TestAllows(t *testing.T) {
	f := kernelLike("6.1.192", kernel.UprobeMulti, kernel.UprobeMultiPIDs)
	for _, tc := range []struct {
		m    kernel.Mode
		want string // "" allowed
	}{
		{kernel.Mode{Cookies: true}, ""},
		{kernel.Mode{}, ""},
		{kernel.Mode{Multi: true, Cookies: true}, "uprobe_multi: Linux 6.1.192 has no uprobe_multi links (Linux 6.6 has)"},
		{kernel.Mode{Multi: true}, "uprobe_multi: uprobe_multi needs cookies"},
	} {
		err := f.Allows(tc.m)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("Allows(%+v) = %v, want %q", tc.m, err, tc.want)
		}
	}
	if d := f.Describe(kernel.Mode{}); d != "perf uprobes, no cookies (Linux 6.1.192, which can run perf uprobes, cookies)" {
		t.Errorf("Describe of a forced mode: %q", d)
	}
}
