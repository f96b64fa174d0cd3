package container

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNoProcess: the PID does not exist or the process has exited.
	ErrNoProcess = errors.New("no such process")
	// ErrNoExecutable: the process has no executable to trace (kernel thread).
	ErrNoExecutable = errors.New("process has no executable")
	// ErrNotFound: no process matches the selector.
	ErrNotFound = errors.New("no matching process found")
	// ErrDockerUnavailable: the Docker daemon could not be reached.
	ErrDockerUnavailable = errors.New("docker daemon not reachable")
	// ErrContainerNotFound: Docker knows no container of that name or ID.
	ErrContainerNotFound = errors.New("no such container")
	// ErrContainerNotRunning: the container exists but is not running.
	ErrContainerNotRunning = errors.New("container is not running")
	// ErrAmbiguous: several processes match; see [AmbiguousError].
	ErrAmbiguous = errors.New("several processes match")
)

// AmbiguousError lists the processes that matched a selector meant to pick
// one.
type AmbiguousError struct {
	What       string // what was looked for, e.g. "cilium-agent"
	Candidates []Process
}

func (e *AmbiguousError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s processes found, choose one by PID or container:", len(e.Candidates), e.What)
	for i, p := range e.Candidates {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteByte(' ')
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }
