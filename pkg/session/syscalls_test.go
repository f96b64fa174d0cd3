package session_test

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
	"github.com/cilium-tracer/tracer/pkg/session"
)

// phasedSyscallArgs run regeneratePhased with its last phases: a child
// process that computes for 30 ms, a bpf(BPF_PROG_LOAD) of a program whose
// verification takes milliseconds, and a dump of the links over netlink.
var phasedSyscallArgs = []string{"-wait-start", "-workers", "0", "-phased", "3", "-phase-exec", "30ms", "-phase-bpf-insns", "20000", "-phase-netlink"}

// The system calls and child processes of traced calls, from the syscall
// tracepoints, against the agent's own clock: the child process it runs,
// the BPF program it loads and the read(2) it blocks in are spans of the
// call, each within 2 ms + 10%, and the short syscalls are counted. On the
// legacy object too, whose goroutine table the syscall programs share as
// well.
func TestSyscalls(t *testing.T) {
	legacy := kernel.Mode{}
	for _, tc := range []struct {
		v    testagent.Variant
		mode *kernel.Mode
		// pidns runs the agent in a PID namespace of its own, as in a
		// container: its children's PIDs there are not the node's.
		pidns bool
	}{
		{v: testagent.Variant{Stripped: true, PIE: true}},
		{v: testagent.Variant{Stripped: true, PIE: true}, mode: &legacy},
		{v: testagent.Variant{Stripped: true, PIE: true}, pidns: true},
		{v: testagent.Variant{Toolchain: "go1.22.12"}},
	} {
		name := tc.v.String()
		if tc.mode != nil {
			name += "/" + tc.mode.String()
		}
		if tc.pidns {
			name += "/PID namespace"
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(testagent.Build(t, tc.v), phasedSyscallArgs...)
			if tc.pidns {
				cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
			}
			agent := testagent.StartCmd(t, cmd)
			got, _, _ := traceAll(t, agent, session.Config{Funcs: []string{testagent.Phased}, Syscalls: true, Mode: tc.mode})
			want := agent.Phased(t)
			nl := netlinkCounts(t, agent.Lines())
			if len(got) != len(want) || len(want) != 3 || len(nl) != 3 {
				t.Fatalf("%d calls traced, the agent made %d (want 3) and %d netlink dumps", len(got), len(want), len(nl))
			}
			for i, c := range got {
				checkSyscalls(t, i, c, want[i])
				// Each send and receive on the netlink socket, and
				// none of the others, named netlink.
				n := map[string]int{}
				for _, s := range c.Syscalls {
					n[s.Name]++
				}
				for _, tot := range c.SyscallTotals {
					n[tot.Name] += tot.Count
				}
				if n["netlink sendto"] != nl[i][0] || n["netlink recvfrom"] != nl[i][1] {
					t.Errorf("call %d: %d netlink sendto and %d netlink recvfrom, the agent made %d and %d", i, n["netlink sendto"], n["netlink recvfrom"], nl[i][0], nl[i][1])
				}
			}
		})
	}
}

// A child still running when its call returns is a child span of the call
// up to its end, marked running, against the agent's own log: its PID,
// when starting it began and when the call returned. The agent reaps each
// such child before its next call: the exit, read then, is no span and is
// not kept.
func TestSyscallsOutlive(t *testing.T) {
	agent := testagent.Start(t, testagent.Build(t, testagent.Variant{Stripped: true, PIE: true}),
		"-wait-start", "-workers", "0", "-phased", "3", "-phase-exec-detach", "20ms")
	got, _, s := traceAll(t, agent, session.Config{Funcs: []string{testagent.Phased}, Syscalls: true})
	type detached struct{ pid, start, returned int64 }
	var want []detached
	for _, l := range agent.Lines() {
		var d detached
		if _, err := fmt.Sscanf(l, "detached pid=%d start_unix_ns=%d returned_unix_ns=%d", &d.pid, &d.start, &d.returned); err == nil {
			want = append(want, d)
		}
	}
	if len(got) != 3 || len(want) != 3 {
		t.Fatalf("%d calls traced, the agent detached %d children (want 3)", len(got), len(want))
	}
	const tol = 2 * time.Millisecond
	near := func(a, b time.Time) bool { d := a.Sub(b); return d <= tol && d >= -tol }
	for i, c := range got {
		var children []calls.Syscall
		for _, sc := range c.Syscalls {
			if sc.Child {
				children = append(children, sc)
			}
		}
		if len(children) != 1 {
			t.Errorf("call %d: %d child processes, want the one the agent detached: %+v", i, len(children), children)
			continue
		}
		w, ch, end := want[i], children[0], c.Start.Add(c.Duration)
		t.Logf("call %d: child %s pid %d running %v from +%v for %v; the agent started it at +%v, returned at +%v", i, ch.Name, ch.Ret, ch.Running, ch.Start.Sub(c.Start), ch.Duration, time.Unix(0, w.start).Sub(c.Start), time.Unix(0, w.returned).Sub(c.Start))
		if ch.Ret != w.pid || !ch.Running || ch.Name != "cilium-agent" {
			t.Errorf("call %d: child %q pid %d running %v, want cilium-agent pid %d running", i, ch.Name, ch.Ret, ch.Running, w.pid)
		}
		if !ch.Start.Add(ch.Duration).Equal(end) {
			t.Errorf("call %d: the running child ends at %v, the call at %v", i, ch.Start.Add(ch.Duration), end)
		}
		if !near(ch.Start, time.Unix(0, w.start)) || !near(end, time.Unix(0, w.returned)) {
			t.Errorf("call %d: the child from %v to %v, the agent started it at %v and returned at %v (tolerance %v)", i, ch.Start, end, time.Unix(0, w.start), time.Unix(0, w.returned), tol)
		}
	}
	// The first two children's exits were read at the next calls, and
	// dropped; the last one's is still to come.
	if calls, outlived := session.HeldSyscalls(s); calls != 0 || outlived != 1 {
		t.Errorf("the session holds the events of %d calls and awaits %d exits, want 0 and 1", calls, outlived)
	}
}

// checkSyscalls checks the syscalls of call i of regeneratePhased against
// what the agent measured of it, w.
func checkSyscalls(t *testing.T, i int, c calls.Call, w map[string]time.Duration) {
	t.Helper()
	for _, s := range c.Syscalls {
		t.Logf("call %d: %v %s ret=%d child=%v", i, s.Duration, s.Name, s.Ret, s.Child)
		if s.Start.Before(c.Start) || s.Start.Add(s.Duration).After(c.Start.Add(c.Duration)) {
			t.Errorf("call %d: %s from %v for %v is not within the call, from %v for %v", i, s.Name, s.Start, s.Duration, c.Start, c.Duration)
		}
	}
	for _, tot := range c.SyscallTotals {
		t.Logf("call %d: %d× %s, %v", i, tot.Count, tot.Name, tot.Time)
	}
	for _, part := range []struct {
		name  string
		child bool
		phase string
	}{
		{"cilium-agent", true, "exec"},
		{"bpf BPF_PROG_LOAD", false, "bpf"},
		{"read", false, "syscall"},
	} {
		// The first of its name: readPipe's read comes before the
		// child's start, which may read a pipe too.
		var found []calls.Syscall
		for _, s := range c.Syscalls {
			if s.Name == part.name && s.Child == part.child {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			t.Errorf("call %d: no span %q (child %v)", i, part.name, part.child)
			continue
		}
		// A signal that interrupts the read has the kernel restart it
		// (ret -512 to -516, ERESTART*), and aborts the verifier with
		// EAGAIN, when the agent loads again: to the agent's clock one
		// call, from the first span to the first that succeeded.
		took := found[0].Duration
		for _, s := range found {
			if s.Ret >= 0 {
				took = s.Start.Add(s.Duration).Sub(found[0].Start)
				break
			}
		}
		if lo, hi := testagent.PhaseBounds(w, part.phase); took < lo || took > hi {
			t.Errorf("call %d: %s took %v, the agent measured %v (want %v to %v)", i, part.name, took, w[part.phase], lo, hi)
		}
	}
	// The short ones: regeneratePhased makes one pipe, and starting the
	// child another, and closes their four ends, and the program's. On a
	// slow machine (arm64 under qemu's TCG) one may last past the span
	// threshold and be a span instead: counted with the spans.
	counts := map[string]int{}
	for _, tot := range c.SyscallTotals {
		counts[tot.Name] += tot.Count
		if tot.Count <= 0 || tot.Time <= 0 {
			t.Errorf("call %d: %d× %s in %v", i, tot.Count, tot.Name, tot.Time)
		}
	}
	for _, sc := range c.Syscalls {
		if !sc.Child {
			counts[sc.Name]++
		}
	}
	if counts["pipe2"] < 2 || counts["close"] < 5 {
		t.Errorf("call %d: %d pipe2 and %d close, want at least 2 and 5", i, counts["pipe2"], counts["close"])
	}
}

// netlinkCounts parses the agent's "netlink sends=N recvs=M" lines.
func netlinkCounts(t *testing.T, lines []string) [][2]int {
	t.Helper()
	var out [][2]int
	for _, l := range lines {
		var c [2]int
		if _, err := fmt.Sscanf(l, "netlink sends=%d recvs=%d", &c[0], &c[1]); err == nil {
			out = append(out, c)
		}
	}
	return out
}
