package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// agentImage builds the FROM scratch image of examples/agent once.
func agentImage(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Fatalf("these tests need a running Docker engine: %v: %s", err, out)
	}
	bin := testagent.Build(t, testagent.Variant{Stripped: true})
	ctx := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "cilium-agent"), b, 0o755)
	df, err := os.ReadFile(filepath.Join(testagent.Root(), "examples", "agent", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644)
	tag := "tracer-test/cilium-agent:" + strconv.Itoa(os.Getpid())
	docker(t, "build", "-q", "-t", tag, ctx)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

// runAgentContainer starts the agent image as the container cilium-agent,
// the name operators use.
func runAgentContainer(t *testing.T, image string, args ...string) {
	t.Helper()
	exec.Command("docker", "rm", "-f", "cilium-agent").Run()
	docker(t, append([]string{"run", "-d", "--name", "cilium-agent", image}, args...)...)
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "cilium-agent").Run() })
}

// agentReports returns the final report of each run of the container, in
// order: the agent prints one JSON line each time it exits.
func agentReports(t *testing.T) []testagent.Report {
	t.Helper()
	var rs []testagent.Report
	for _, line := range strings.Split(docker(t, "logs", "cilium-agent"), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r testagent.Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

func waitExited(t *testing.T, name string) {
	t.Helper()
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(100 * time.Millisecond) {
		if docker(t, "inspect", "-f", "{{.State.Running}}", name) == "false" {
			return
		}
	}
	t.Fatalf("container %s still running", name)
}

func TestContainer(t *testing.T) {
	image := agentImage(t)

	t.Run("trace by container name", func(t *testing.T) {
		runAgentContainer(t, image, "-start-delay", "2s", "-workers", "4", "-iterations", "25", "-interval", "10ms")
		r := startTracer(t, nil, "trace", "--container", "cilium-agent", "--func", testagent.RegenerateBPF, "--output", "json", "--follow=false")
		select {
		case <-r.done:
		case <-time.After(time.Minute):
			t.Fatal("tracer did not end with the container")
		}
		if !r.cmd.ProcessState.Success() {
			t.Fatalf("tracer: %v: %s", r.cmd.ProcessState, r.stderr.String())
		}
		waitExited(t, "cilium-agent")
		reports := agentReports(t)
		if len(reports) != 1 {
			t.Fatalf("%d agent reports", len(reports))
		}
		got := 0
		for _, c := range parseCalls(t, r.stdout.String()) {
			if c.Function == testagent.RegenerateBPF && !c.Unfinished {
				got++
			}
		}
		if want := int(reports[0].Counts[testagent.RegenerateBPF]); got != want || want != 100 {
			t.Errorf("traced %d regenerateBPF calls, the agent made %d (want 100)", got, want)
		}
	})

	t.Run("docker restart", func(t *testing.T) {
		// The start delay gives the tracer time to re-attach before the
		// restarted agent works, so every completed call is seen.
		runAgentContainer(t, image, "-start-delay", "3s", "-workers", "4", "-interval", "10ms")
		r := startTracer(t, nil, "trace", "--container", "cilium-agent", "--func", testagent.RegenerateBPF, "--output", "json")
		r.waitFor(t, "tracing 1 functions", 30*time.Second)
		firstPID := docker(t, "inspect", "-f", "{{.State.Pid}}", "cilium-agent")
		time.Sleep(4 * time.Second)

		restarted := time.Now()
		docker(t, "restart", "-t", "10", "cilium-agent")
		took := r.waitFor(t, "re-attached", time.Minute)
		secondPID := docker(t, "inspect", "-f", "{{.State.Pid}}", "cilium-agent")
		if firstPID == secondPID {
			t.Fatalf("same PID %s after restart", firstPID)
		}
		t.Logf("re-attached %v after the restart (waited %v)", time.Since(restarted), took)
		if !strings.Contains(r.stderr.String(), "pid "+secondPID) {
			t.Errorf("re-attach line does not name the new PID %s: %s", secondPID, r.stderr.String())
		}
		time.Sleep(5 * time.Second)
		docker(t, "stop", "-t", "10", "cilium-agent")
		r.waitFor(t, "target exited", 10*time.Second)
		r.stop(t)

		reports := agentReports(t)
		if len(reports) != 2 {
			t.Fatalf("%d agent reports, want one per run", len(reports))
		}
		calls := parseCalls(t, r.stdout.String())
		for i, pid := range []string{firstPID, secondPID} {
			var done, unfinished int
			for _, c := range calls {
				if c.Function != testagent.RegenerateBPF || strconv.Itoa(c.PID) != pid {
					continue
				}
				if c.Unfinished {
					unfinished++
				} else {
					done++
				}
			}
			// Stopped, the agent finishes the regenerations it started
			// before it reports and exits: every call it made returned.
			want := int(reports[i].Counts[testagent.RegenerateBPF])
			if done != want || done == 0 || unfinished != 0 {
				t.Errorf("run %d (PID %s): traced %d completed + %d unfinished, the agent made %d",
					i+1, pid, done, unfinished, want)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		exec.Command("docker", "rm", "-f", "cilium-agent-stopped").Run()
		docker(t, "create", "--name", "cilium-agent-stopped", image)
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", "cilium-agent-stopped").Run() })
		mustFail(t, tracer(t, nil, "trace", "--container", "cilium-agent-stopped", "--func", testagent.RegenerateBPF), "not running")
		mustFail(t, tracer(t, nil, "trace", "--container", "no-such-container-"+strconv.Itoa(os.Getpid()), "--func", testagent.RegenerateBPF), "no such container")
	})
}

// Without a Docker engine, --container says so in one line, and discovery
// falls back to scanning /proc.
func TestNoDocker(t *testing.T) {
	noDocker := []string{"DOCKER_HOST=unix:///nonexistent/docker.sock"}
	mustFail(t, tracer(t, noDocker, "trace", "--container", "cilium-agent", "--func", testagent.RegenerateBPF), "docker")

	bin := testagent.Build(t, testagent.Variant{})
	a := testagent.Start(t, bin, "-workers", "1", "-interval", "20ms")
	r := tracer(t, noDocker, "targets")
	if r.code != 0 || !strings.Contains(r.stdout, strconv.Itoa(a.PID)) {
		t.Fatalf("targets without Docker (exit %d) does not list PID %d:\n%s%s", r.code, a.PID, r.stdout, r.stderr)
	}
	// Other tests may run agents too: discovery then asks to choose,
	// listing this one.
	r = tracer(t, noDocker, "trace", "--func", testagent.RegenerateBPF, "--duration", "1s", "--output", "none")
	if r.code == 0 {
		if !strings.Contains(r.stderr, fmt.Sprintf("pid %d", a.PID)) {
			t.Errorf("discovery traced something else: %s", r.stderr)
		}
	} else {
		mustFail(t, r, strconv.Itoa(a.PID))
	}
}

// A process in its own mount and PID namespaces, whose binary exists only
// inside its root, is found by name and traced through /proc/PID/root.
func TestOwnNamespaces(t *testing.T) {
	bin := testagent.Build(t, testagent.Variant{})
	name := fmt.Sprintf("nsagent%d", os.Getpid()%100000)
	// The binary is copied onto a tmpfs mounted inside the new mount
	// namespace: the host has no path to it.
	script := fmt.Sprintf(`mount -t tmpfs tmpfs /mnt && cp %s /mnt/%s && rm -f %s && exec /mnt/%s -workers 2 -interval 10ms`,
		"$AGENT", name, "$AGENT", name)
	tmp := filepath.Join(t.TempDir(), "agent")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tmp, b, 0o755)
	cmd := exec.Command("unshare", "--fork", "--kill-child", "--pid", "--mount", "--mount-proc", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "AGENT="+tmp)
	testagent.StartCmd(t, cmd)

	r := tracer(t, nil, "trace", "--process", name, "--func", testagent.RegenerateBPF, "--duration", "2s", "--output", "json")
	if r.code != 0 {
		t.Fatalf("trace --process %s: %s", name, r.stderr)
	}
	if !strings.Contains(r.stderr, "nspid 1,") || !strings.Contains(r.stderr, "/proc/") {
		t.Errorf("attach line does not show NSpid 1 and the /proc/PID/root path: %s", r.stderr)
	}
	n := 0
	for _, c := range parseCalls(t, r.stdout) {
		if c.Function == testagent.RegenerateBPF && !c.Unfinished {
			n++
		}
	}
	if n < 10 {
		t.Errorf("%d regenerateBPF calls traced in 2s, want dozens", n)
	}
}
