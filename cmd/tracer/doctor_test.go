package main_test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

// doctor runs `tracer doctor`, through setpriv with the capability bounding
// set caps unless caps is empty.
func doctor(t *testing.T, caps string) result {
	t.Helper()
	argv := []string{tracerBin, "doctor"}
	if caps != "" {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("setpriv (util-linux) is needed to run with a reduced capability set: %v", err)
		}
		argv = append([]string{setpriv, "--bounding-set", caps, "--"}, argv...)
	}
	return run(t, nil, argv)
}

// line returns the line of out that matches re, failing if none or several
// do.
func line(t *testing.T, out, re string) string {
	t.Helper()
	ms := regexp.MustCompile(`(?m)^`+re+`$`).FindAllString(out, -1)
	if len(ms) != 1 {
		t.Fatalf("%d lines match %q in:\n%s", len(ms), re, out)
	}
	return ms[0]
}

// As root the doctor reports what this test finds itself: the kernel's
// release, each feature check's result, the capabilities held, the mode;
// the programs load and a uprobe attaches, and it exits 0.
func TestDoctor(t *testing.T) {
	r := doctor(t, "")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q; stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	feats := kernel.Probe()
	line(t, r.stdout, regexp.QuoteMeta("kernel: Linux "+feats.Release))
	for _, c := range feats.Checks {
		state := "ok"
		if !c.OK() {
			state = "missing"
		}
		line(t, r.stdout, `  `+state+` +`+regexp.QuoteMeta(fmt.Sprintf("%s (Linux %s, ", c.Name, c.Min))+`.*`)
	}
	caps, err := kernel.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps {
		state := "held"
		if !c.Held {
			// The test runs as root: what root lacks (here
			// CAP_SYS_RESOURCE) is not needed.
			state = "unneeded"
		}
		line(t, r.stdout, `  `+state+` +`+c.Name+`: .*`)
	}
	for _, s := range []string{"kernel.panic_on_warn", "lockdown", "kernel.perf_event_paranoid"} {
		line(t, r.stdout, `  `+regexp.QuoteMeta(s)+`[ :].*`)
	}
	mode, err := feats.Mode()
	if err != nil {
		t.Fatal(err)
	}
	line(t, r.stdout, regexp.QuoteMeta("mode: "+feats.Describe(mode)))
	line(t, r.stdout, "load BPF programs: ok")
	line(t, r.stdout, "attach a uprobe: ok")
}

// With only the capabilities uprobe_multi links need, the doctor says
// CAP_SYS_ADMIN is not; without CAP_PERFMON tracing cannot work, and it
// says why in one line and exits non-zero, its report still on stdout.
func TestDoctorCapabilities(t *testing.T) {
	feats := kernel.Probe()
	mode, err := feats.Mode()
	if err != nil {
		t.Fatal(err)
	}
	r := doctor(t, "-all,+bpf,+perfmon,+sys_ptrace")
	if mode.Multi {
		if r.code != 0 {
			t.Fatalf("with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE: exit %d, stderr %q; stdout:\n%s", r.code, r.stderr, r.stdout)
		}
		line(t, r.stdout, `  unneeded CAP_SYS_ADMIN: .*`)
	} else {
		line(t, r.stdout, `  missing  CAP_SYS_ADMIN: .*`)
	}
	line(t, r.stdout, `  held     CAP_BPF: .*`)

	r = doctor(t, "-all,+bpf,+sys_ptrace")
	mustFail(t, r, "tracing cannot work")
	if !strings.Contains(r.stderr, "CAP_PERFMON") {
		t.Errorf("the reason does not name CAP_PERFMON: %q", r.stderr)
	}
	line(t, r.stdout, `  missing  CAP_PERFMON: .*`)
	line(t, r.stdout, `mode: none: .*`)
}
