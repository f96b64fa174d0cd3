package container

import (
	"context"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

func TestResolveContainer(t *testing.T) {
	c := needDocker(t)
	id, name := runContainer(t, c, "resolve", true)
	hostPID := inspectPID(t, c, id)
	ctx := context.Background()

	for _, ref := range []string{name, id, id[:12]} {
		p, err := Resolve(ctx, Selector{Container: ref})
		if err != nil {
			t.Fatalf("Resolve(container %s): %v", ref, err)
		}
		if p.PID != hostPID || p.NSPID != 1 {
			t.Errorf("container %s: PID %d NSPID %d, want %d and 1", ref, p.PID, p.NSPID, hostPID)
		}
		if p.ContainerID != id || p.ContainerName != name || p.Runtime != RuntimeDocker {
			t.Errorf("container %s: got %q %q %q, want %q %q docker", ref, p.ContainerID, p.ContainerName, p.Runtime, id, name)
		}
		if p.Comm != agentInImage {
			t.Errorf("Comm = %q", p.Comm)
		}
		checkBinary(t, p, "/usr/bin/"+agentInImage)
	}

	// By PID or by name, the container is found from its cgroup and named
	// through the API.
	for _, sel := range []Selector{{PID: hostPID}, {Process: agentInImage}} {
		p, err := Resolve(ctx, sel)
		if err != nil {
			t.Fatalf("Resolve(%+v): %v", sel, err)
		}
		if p.PID != hostPID || p.ContainerID != id || p.ContainerName != name || p.Runtime != RuntimeDocker {
			t.Errorf("Resolve(%+v) = %v", sel, p)
		}
		t.Logf("%+v: %v %v", sel, p, p.TargetRow())
	}
}

func TestWatchDockerRestart(t *testing.T) {
	c := needDocker(t)
	id, name := runContainer(t, c, "restart", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := Resolve(ctx, Selector{Container: name})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	restarted := make(chan error, 1)
	go func() {
		timeout := 5
		_, err := c.ContainerRestart(ctx, id, client.ContainerRestartOptions{Timeout: &timeout})
		restarted <- err
	}()
	// A PID selector follows the container the process was in.
	byPID := make(chan Process, 1)
	go func() {
		p, err := Watch(ctx, Selector{PID: old.PID}, old, WatchOptions{Backoff: Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond}})
		if err != nil {
			t.Errorf("Watch by PID: %v", err)
		}
		byPID <- p
	}()
	retries := 0
	p, err := Watch(ctx, Selector{Container: name}, old, WatchOptions{
		Backoff: Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		OnRetry: func(attempt int, err error, wait time.Duration) {
			retries++
			t.Logf("attempt %d: %v; next in %v", attempt, err, wait)
		},
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("new process %v found %v after the restart began, %d retries", p, took, retries)
	if p.Same(old) || p.PID == old.PID {
		t.Errorf("Watch returned the old process %v", p)
	}
	if p.PID != inspectPID(t, c, id) || p.NSPID != 1 || p.ContainerID != id {
		t.Errorf("Watch returned %v, want the container's new PID 1", p)
	}
	if !p.SameBinary(old) {
		t.Errorf("same image after restart, but SameBinary is false: %d:%d vs %d:%d", p.Dev, p.Inode, old.Dev, old.Inode)
	}
	checkBinary(t, p, "/usr/bin/"+agentInImage)
	if q := <-byPID; !q.Same(p) {
		t.Errorf("Watch by PID = %v, want %v", q, p)
	}
}

func TestContainerErrors(t *testing.T) {
	c := needDocker(t)
	ctx := context.Background()

	_, created := runContainer(t, c, "created", false)
	_, err := Resolve(ctx, Selector{Container: created})
	wantErr(t, err, ErrContainerNotRunning)

	id, stopped := runContainer(t, c, "stopped", true)
	timeout := 5
	if _, err := c.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(ctx, Selector{Container: stopped})
	wantErr(t, err, ErrContainerNotRunning)

	_, err = Resolve(ctx, Selector{Container: testPrefix + "missing"})
	wantErr(t, err, ErrContainerNotFound)
}

func TestDockerUnreachable(t *testing.T) {
	c := needDocker(t)
	id, _ := runContainer(t, c, "nodaemon", true)
	hostPID := inspectPID(t, c, id)

	for _, host := range []string{"unix:///nonexistent/docker.sock", "tcp://127.0.0.1:1"} {
		t.Setenv("DOCKER_HOST", host)
		_, err := Resolve(context.Background(), Selector{Container: "cilium-agent"})
		wantErr(t, err, ErrDockerUnavailable)

		// Discovery by name falls back to /proc: the container is still
		// found, its ID and runtime read from the cgroup, without a name.
		p, err := Resolve(context.Background(), Selector{Process: agentInImage})
		if err != nil {
			t.Fatalf("DOCKER_HOST=%s: Resolve by name: %v", host, err)
		}
		if p.PID != hostPID || p.ContainerID != id || p.Runtime != RuntimeDocker || p.ContainerName != "" {
			t.Errorf("DOCKER_HOST=%s: Resolve by name = %v", host, p)
		}
	}
}
