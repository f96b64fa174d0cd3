package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// nsAgent is the agent's name inside its own namespaces (15 characters at
// most, so that comm holds all of it), unique like agentInImage.
var nsAgent = fmt.Sprintf("ctn-%d", os.Getpid())

// startInNamespaces runs the agent as PID 1 of new PID and mount
// namespaces, chrooted into a tmpfs mounted only in its mount namespace:
// its executable exists nowhere the host can see except /proc/PID/root.
// It returns the unshare command and the mount point.
func startInNamespaces(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: mounts and PID namespaces")
	}
	root := t.TempDir()
	script := `mount -t tmpfs tmpfs "$1" && cp "$2" "$1/$3" && exec chroot "$1" "/$3"`
	cmd := exec.Command("unshare", "--fork", "--pid", "--mount", "--mount-proc", "--kill-child",
		"/bin/sh", "-c", script, "sh", root, agentBin, nsAgent)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, root
}

// waitResolve retries Resolve while the process is starting up.
func waitResolve(t *testing.T, sel Selector, not Process) Process {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := Resolve(context.Background(), sel)
		if err == nil && !p.Same(not) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("Resolve(%+v): %v", sel, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProcessInOwnNamespaces(t *testing.T) {
	cmd, root := startInNamespaces(t)
	p := waitResolve(t, Selector{Process: nsAgent}, Process{})
	t.Logf("found %v, binary %s", p, p.Binary)

	if p.PID == cmd.Process.Pid || p.NSPID != 1 {
		t.Errorf("PID %d NSPID %d, want the unshare child (not %d) as PID 1 of its namespace", p.PID, p.NSPID, cmd.Process.Pid)
	}
	if p.Comm != nsAgent || p.ContainerID != "" || p.Runtime != RuntimeNone {
		t.Errorf("got %v, want a bare %s", p, nsAgent)
	}
	checkBinary(t, p, "/"+nsAgent)
	if _, err := os.Stat(filepath.Join(root, nsAgent)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("binary visible from the host at %s (err %v): the test does not test /proc/PID/root", root, err)
	}

	byPID, err := Resolve(context.Background(), Selector{PID: p.PID})
	if err != nil || byPID != p {
		t.Errorf("Resolve(PID %d) = %v, %v; want %v", p.PID, byPID, err, p)
	}

	// Restart: the old namespace goes away, a new one comes up.
	done := make(chan struct{})
	var next Process
	var werr error
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		next, werr = Watch(ctx, Selector{Process: nsAgent}, p, WatchOptions{
			Backoff: Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		})
	}()
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	startInNamespaces(t)
	<-done
	if werr != nil {
		t.Fatalf("Watch: %v", werr)
	}
	if next.Same(p) || next.NSPID != 1 || next.Comm != nsAgent {
		t.Errorf("Watch = %v, want a new %s", next, nsAgent)
	}
	checkBinary(t, next, "/"+nsAgent)
	// The new namespace copied the binary into a new tmpfs: another file.
	if next.SameBinary(p) {
		t.Errorf("new copy of the binary taken for the old one: %d:%d", next.Dev, next.Inode)
	}
}

func TestResolvePIDErrors(t *testing.T) {
	max, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(max)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(context.Background(), Selector{PID: n + 1})
	wantErr(t, err, ErrNoProcess)

	// A zombie: exited, not yet reaped.
	cmd := exec.Command(agentBin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if _, err := Resolve(context.Background(), Selector{PID: cmd.Process.Pid}); err != nil {
		t.Fatalf("running agent: %v", err)
	}
	cmd.Process.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = Resolve(context.Background(), Selector{PID: cmd.Process.Pid})
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantErr(t, err, ErrNoProcess)

	// kthreadd: alive, but nothing to trace.
	_, err = Resolve(context.Background(), Selector{PID: 2})
	wantErr(t, err, ErrNoExecutable)

	_, err = Resolve(context.Background(), Selector{PID: 1, Process: "x"})
	if err == nil {
		t.Error("two selector fields accepted")
	}
	_, err = Resolve(context.Background(), Selector{Process: "no-such-process-name"})
	wantErr(t, err, ErrNotFound)
}

func TestResolveSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Resolve(context.Background(), Selector{PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.StartTime == 0 || p.ContainerID != "" {
		t.Errorf("got %v", p)
	}
	checkBinary(t, p, exe)
	if !p.SameBinary(p) || !p.Same(p) {
		t.Error("a process is not the same as itself")
	}
}

// TestListCiliumAgent runs an agent called cilium-agent for a moment.
// Other sessions may run their own, so the test only asks for ours among
// them.
func TestListCiliumAgent(t *testing.T) {
	pid, bin := runAgentNamed(t, DefaultProcess)
	var (
		ps  []Process
		err error
	)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ps, err = List(context.Background()); err != nil {
			t.Fatal(err)
		}
		if find(ps, pid) != nil {
			break
		}
	}
	p := find(ps, pid)
	if p == nil {
		t.Fatalf("List = %v, want pid %d among them", ps, pid)
	}
	checkBinary(t, *p, bin)

	got, err := Resolve(context.Background(), Selector{})
	var amb *AmbiguousError
	switch {
	case errors.As(err, &amb):
		if !errors.Is(err, ErrAmbiguous) || find(amb.Candidates, pid) == nil {
			t.Errorf("ambiguous without our agent: %v", err)
		}
		oneLine(t, err)
	case err != nil:
		t.Fatal(err)
	case got.PID != pid:
		t.Errorf("auto-discovery found %v, want pid %d", got, pid)
	}
}

// TestResolveLongName finds a process whose name the kernel truncated in
// comm, by the executable's full base name.
func TestResolveLongName(t *testing.T) {
	long := fmt.Sprintf("ctest-agent-with-a-long-name-%d", os.Getpid())
	pid, _ := runAgentNamed(t, long)
	p := waitResolve(t, Selector{Process: long}, Process{})
	if p.PID != pid || p.Comm != long[:commLen] {
		t.Errorf("Resolve(%s) = %v", long, p)
	}
	// The truncated name alone matches no executable.
	if _, err := Resolve(context.Background(), Selector{Process: long[:commLen]}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(%s) = %v, want ErrNotFound", long[:commLen], err)
	}
}

func find(ps []Process, pid int) *Process {
	for i := range ps {
		if ps[i].PID == pid {
			return &ps[i]
		}
	}
	return nil
}

const asNobodyEnv = "CONTAINER_TEST_AS_NOBODY"

// TestPermission runs this test binary as nobody: reading another user's
// process gives an error that names the path.
func TestPermission(t *testing.T) {
	if os.Getenv(asNobodyEnv) != "" {
		_, err := Resolve(context.Background(), Selector{PID: 1})
		var pe *fs.PathError
		if !errors.As(err, &pe) || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "/proc/1/") {
			t.Fatalf("Resolve(PID 1) as nobody = %v, want a permission error naming /proc/1/...", err)
		}
		fmt.Println("ERROR:", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root to switch to nobody")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(agentBin), "container.test")
	testagent.Install(t, exe, bin)
	cmd := exec.Command(bin, "-test.run=^TestPermission$", "-test.v")
	cmd.Env = append(os.Environ(), asNobodyEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// runAgentNamed runs a copy of the test agent whose executable is called
// name, until the test ends, and returns its PID and path.
func runAgentNamed(t *testing.T, name string) (int, string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	testagent.Install(t, agentBin, bin)
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid, bin
}
