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
		want  time.Duration
	}{
		{"cilium-agent", true, w["exec"]},
		{"bpf BPF_PROG_LOAD", false, w["bpf"]},
		{"read", false, w["syscall"]},
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
		tol := 2*time.Millisecond + part.want/10
		if d := found[0].Duration - part.want; d > tol || d < -tol {
			t.Errorf("call %d: %s took %v, the agent measured %v (tolerance %v)", i, part.name, found[0].Duration, part.want, tol)
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
