package procmaps

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

// The target prints the return addresses of a call made from a method
// inlined into regenerateBPF and the runtime's own symbolization of them; it
// then sleeps, so Bias can read its mappings: with the bias, its return
// addresses symbolize as the runtime itself does.
func TestFramesOfRunningProcess(t *testing.T) {
	for _, tg := range symtest.Targets(t) {
		if tg.GOARCH != "amd64" {
			continue
		}
		t.Run(tg.String(), func(t *testing.T) {
			f := symtest.Open(t, tg.Path, symbols.Open)
			cmd := exec.Command(tg.Path, "3")
			cmd.Env = append(os.Environ(), "TARGET_STACK=1", "TARGET_SLEEP=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cmd.Process.Kill()
				cmd.Wait()
			}()
			var pcs []uint64
			type fl struct {
				fn   string
				line int
			}
			var want []fl
			sc := bufio.NewScanner(stdout)
			for sc.Scan() && sc.Text() != "end" {
				fields := strings.Fields(sc.Text())
				switch fields[0] {
				case "pc":
					pc, err := strconv.ParseUint(strings.TrimPrefix(fields[1], "0x"), 16, 64)
					if err != nil {
						t.Fatal(err)
					}
					pcs = append(pcs, pc)
				case "frame":
					line, _ := strconv.Atoi(fields[2])
					want = append(want, fl{fields[1], line})
				}
			}
			bias, err := Bias(f, cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			// The binary as the process sees it gives the same answers.
			pf, err := symbols.Open(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			defer pf.Close()
			if pbias, err := Bias(pf, cmd.Process.Pid); err != nil || pbias != bias || pf.BuildID != f.BuildID {
				t.Errorf("via /proc/PID/exe: bias %#x, %v, build ID %q; want %#x, %q", pbias, err, pf.BuildID, bias, f.BuildID)
			}
			if (bias != 0) != tg.PIE {
				t.Errorf("bias %#x for PIE=%v", bias, tg.PIE)
			}
			frames := f.Frames(pcs[0] - 1 - bias)
			if len(frames) != 2 ||
				frames[0].Func != "main.(*Endpoint).step" || !frames[0].Inlined || frames[0].Line != want[0].line ||
				frames[1].Func != "main.(*Endpoint).regenerateBPF" || frames[1].Inlined || frames[1].Line != want[1].line ||
				filepath.Base(frames[0].File) != "main.go" {
				t.Errorf("frames at %#x: %+v, want %v", pcs[0], frames, want[:2])
			}
			// Every frame the runtime reports is the innermost frame at one
			// of the return addresses.
			var got []fl
			for _, pc := range pcs {
				for _, fr := range f.Frames(pc - 1 - bias) {
					got = append(got, fl{fr.Func, fr.Line})
				}
			}
			for _, w := range want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("runtime frame %v not found in %v", w, got)
				}
			}
		})
	}
}

func TestFindTextMapping(t *testing.T) {
	maps := []byte(`00400000-00401000 r--p 00000000 fd:01 100 /usr/bin/agent
00401000-0049f000 r-xp 00001000 fd:01 100 /usr/bin/agent
7f0000000000-7f0000001000 r--p 00000000 fd:01 200 /usr/lib/other lib.so
7f0000001000-7f0000090000 r-xp 00001000 fd:01 200 /usr/lib/other lib.so
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
`)
	m, err := findTextMapping(maps, 0x1000, 200, "/usr/bin/agent")
	if err != nil || m.start != 0x7f0000001000 || m.path != "/usr/lib/other lib.so" {
		t.Errorf("by inode: %+v, %v", m, err)
	}
	m, err = findTextMapping(maps, 0x1000, 0, "/usr/bin/agent")
	if err != nil || m.start != 0x401000 {
		t.Errorf("by path: %+v, %v", m, err)
	}
	if _, err := findTextMapping(maps, 0x1000, 0, ""); err == nil {
		t.Error("ambiguous mappings accepted")
	}
	if _, err := findTextMapping(maps, 0x1000, 300, "/nowhere"); err == nil {
		t.Error("ambiguous mappings accepted")
	}
}

func TestBiasOfDeadProcess(t *testing.T) {
	f := symtest.Open(t, symtest.FindTarget(t, "local", "amd64", false, true).Path, symbols.Open)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := Bias(f, cmd.Process.Pid); err == nil {
		t.Error("Bias of a dead process succeeded")
	}
}
