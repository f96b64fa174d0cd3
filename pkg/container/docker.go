package container

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// dockerTimeout bounds each Docker API call, so that a DOCKER_HOST pointing
// at an unresponsive address fails instead of hanging discovery.
const dockerTimeout = 5 * time.Second

// newDockerClient connects as the docker CLI would (DOCKER_HOST,
// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION); the API version
// is negotiated on the first call, so older engines (API 1.40+) work.
func newDockerClient() (*client.Client, error) {
	c, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDockerUnavailable, err)
	}
	return c, nil
}

// dockerErr classifies a Docker API error about what; ctx is the caller's
// context, whose own cancellation is passed through unchanged.
func dockerErr(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w", what, ErrContainerNotFound)
	case client.IsErrConnectionFailed(err), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrDockerUnavailable, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// inspectContainer resolves a Docker container name or ID to its main
// process.
func inspectContainer(ctx context.Context, c *client.Client, ref string) (Process, error) {
	cctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	res, err := c.ContainerInspect(cctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return Process{}, dockerErr(ctx, "container "+ref, err)
	}
	ctr := res.Container
	name := strings.TrimPrefix(ctr.Name, "/")
	if ctr.State == nil || !ctr.State.Running || ctr.State.Pid <= 0 {
		status := "unknown"
		if ctr.State != nil {
			status = string(ctr.State.Status)
		}
		return Process{}, fmt.Errorf("container %s: %w (%s)", name, ErrContainerNotRunning, status)
	}
	p, err := ReadProcess(ctr.State.Pid)
	if err != nil {
		// Exited between the inspect and the read: the container stopped.
		if errors.Is(err, ErrNoProcess) {
			return Process{}, fmt.Errorf("container %s: %w (%w)", name, ErrContainerNotRunning, err)
		}
		return Process{}, fmt.Errorf("container %s: %w", name, err)
	}
	p.ContainerID, p.ContainerName, p.Runtime = ctr.ID, name, RuntimeDocker
	return p, nil
}

// runningContainers maps the IDs of Docker's running containers to their
// names.
func runningContainers(ctx context.Context, c *client.Client) (map[string]string, error) {
	cctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	res, err := c.ContainerList(cctx, client.ContainerListOptions{})
	if err != nil {
		return nil, dockerErr(ctx, "docker: list containers", err)
	}
	names := make(map[string]string, len(res.Items))
	for _, s := range res.Items {
		name := s.ID
		if len(s.Names) > 0 {
			name = strings.TrimPrefix(s.Names[0], "/")
		}
		names[s.ID] = name
	}
	return names, nil
}

// addDockerNames marks the processes in Docker's running containers as
// Docker's and names their containers. Docker being unreachable is not an
// error here: on Kubernetes nodes there is usually no Docker at all.
func addDockerNames(ctx context.Context, ps []Process) ([]Process, error) {
	need := false
	for _, p := range ps {
		need = need || p.ContainerID != ""
	}
	if !need {
		return ps, nil
	}
	c, err := newDockerClient()
	if err != nil {
		return ps, nil
	}
	defer c.Close()
	names, err := runningContainers(ctx, c)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return ps, nil
	}
	for i, p := range ps {
		if name, ok := names[p.ContainerID]; ok {
			ps[i].ContainerName, ps[i].Runtime = name, RuntimeDocker
		}
	}
	return ps, nil
}
