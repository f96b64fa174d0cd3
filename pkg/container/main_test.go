package container

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// Names are unique per test run: other sessions may run their own
// cilium-agent containers on the same engine at the same time.
var (
	agentBin   string // static test agent, built once
	testImage  = fmt.Sprintf("tracer-container-test:%d", os.Getpid())
	testPrefix = fmt.Sprintf("tracer-ctest-%d-", os.Getpid())
	dockerErr0 error // why Docker tests cannot run, checked by needDocker
)

// agentInImage is the agent's name inside the test image; it is not
// cilium-agent so that the image does not disturb other sessions'
// auto-discovery, and it is unique so that concurrent runs of these tests
// do not find each other's agents.
var agentInImage = fmt.Sprintf("ctd-%d", os.Getpid())

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// TestPermission re-runs this binary as nobody, who can neither build
	// nor reach Docker, for one test that needs neither.
	if os.Getenv(asNobodyEnv) != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "container-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// World-readable, so the test binary can run as another user.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	agentBin = filepath.Join(dir, agentInImage)
	cmd := exec.Command("go", "build", "-trimpath", "-o", agentBin, "./testdata/agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build test agent: %v\n%s", err, out)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	dockerErr0 = buildImage(ctx)
	cancel()
	if dockerErr0 == nil {
		defer removeImage()
	}
	return m.Run()
}

// buildImage builds testImage FROM scratch holding only the agent, through
// the Engine API's classic builder: nothing is pulled.
func buildImage(ctx context.Context) error {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return err
	}
	defer c.Close()
	bin, err := os.ReadFile(agentBin)
	if err != nil {
		return err
	}
	dockerfile := fmt.Sprintf("FROM scratch\nCOPY %[1]s /usr/bin/%[1]s\nENTRYPOINT [\"/usr/bin/%[1]s\"]\n", agentInImage)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {agentInImage, 0o755, bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := c.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{testImage}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		if msg.Error != "" {
			return fmt.Errorf("build image: %s", msg.Error)
		}
	}
}

func removeImage() {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return
	}
	defer c.Close()
	c.ImageRemove(context.Background(), testImage, client.ImageRemoveOptions{Force: true, PruneChildren: true})
}

// needDocker fails the test when the engine is missing: CI provides one.
func needDocker(t *testing.T) *client.Client {
	t.Helper()
	if dockerErr0 != nil {
		t.Fatalf("docker engine needed: %v", dockerErr0)
	}
	c, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// runContainer creates a container of the test image called testPrefix+name,
// starts it unless start is false, and removes it at the end of the test.
func runContainer(t *testing.T, c *client.Client, name string, start bool) (id, fullName string) {
	t.Helper()
	ctx := context.Background()
	fullName = testPrefix + name
	res, err := c.ContainerCreate(ctx, client.ContainerCreateOptions{Name: fullName, Image: testImage})
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	t.Cleanup(func() {
		c.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	if start {
		if _, err := c.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatalf("start container: %v", err)
		}
	}
	return res.ID, fullName
}

func inspectPID(t *testing.T, c *client.Client, id string) int {
	t.Helper()
	res, err := c.ContainerInspect(context.Background(), id, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Container.State.Pid
}

// checkBinary asserts that p.Binary lies under /proc/PID/root, opens, and
// is the very file the process executes.
func checkBinary(t *testing.T, p Process, inner string) {
	t.Helper()
	want := fmt.Sprintf("/proc/%d/root%s", p.PID, inner)
	if p.Binary != want {
		t.Errorf("Binary = %q, want %q", p.Binary, want)
	}
	f, err := os.Open(p.Binary)
	if err != nil {
		t.Fatalf("open Binary: %v", err)
	}
	defer f.Close()
	got, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(got, exe) {
		t.Errorf("Binary %s is not the file /proc/%d/exe points to", p.Binary, p.PID)
	}
	if p.Inode == 0 {
		t.Errorf("Inode not set")
	}
}

func oneLine(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
	oneLine(t, err)
	t.Logf("error as the user sees it: %v", err)
}
