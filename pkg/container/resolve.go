package container

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultProcess is the process name an empty [Selector] looks for.
const DefaultProcess = "cilium-agent"

// Selector says which process to trace. At most one field is set; when all
// are empty, Resolve looks for a single cilium-agent on this node.
type Selector struct {
	PID       int    // host PID
	Container string // Docker container name or ID
	Process   string // process name, as in /proc/PID/comm and the executable's base name
}

func (s Selector) validate() error {
	n := 0
	for _, set := range []bool{s.PID != 0, s.Container != "", s.Process != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("select a target by only one of PID, container or process name")
	}
	if s.PID < 0 {
		return fmt.Errorf("pid %d: %w", s.PID, ErrNoProcess)
	}
	return nil
}

// Resolve finds the one process sel designates. Errors wrap ErrNoProcess,
// ErrNotFound, ErrAmbiguous (an *AmbiguousError lists the candidates),
// ErrDockerUnavailable, ErrContainerNotFound or ErrContainerNotRunning; a
// permission problem is an *fs.PathError naming the path.
func Resolve(ctx context.Context, sel Selector) (Process, error) {
	if err := sel.validate(); err != nil {
		return Process{}, err
	}
	switch {
	case sel.PID != 0:
		p, err := ReadProcess(sel.PID)
		if err != nil {
			return Process{}, err
		}
		ps, err := addDockerNames(ctx, []Process{p})
		if err != nil {
			return Process{}, err
		}
		return ps[0], nil
	case sel.Container != "":
		c, err := newDockerClient()
		if err != nil {
			return Process{}, err
		}
		defer c.Close()
		return inspectContainer(ctx, c, sel.Container)
	default:
		name := cmp.Or(sel.Process, DefaultProcess)
		ps, err := list(ctx, name)
		if err != nil {
			return Process{}, err
		}
		switch len(ps) {
		case 0:
			return Process{}, fmt.Errorf("process %s: %w", name, ErrNotFound)
		case 1:
			return ps[0], nil
		default:
			return Process{}, &AmbiguousError{What: name, Candidates: ps}
		}
	}
}

// List returns every cilium-agent process on this node, those in Docker
// containers first (named), then the others (containerd, CRI-O, bare) by
// PID. Docker being unreachable only loses the names.
func List(ctx context.Context) ([]Process, error) {
	return list(ctx, DefaultProcess)
}

func list(ctx context.Context, name string) ([]Process, error) {
	ps, err := scanProc(name)
	if err != nil {
		return nil, err
	}
	ps, err = addDockerNames(ctx, ps)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(ps, func(a, b Process) int {
		ad, bd := a.Runtime == RuntimeDocker, b.Runtime == RuntimeDocker
		if ad != bd {
			if ad {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.PID, b.PID)
	})
	return ps, nil
}

// commLen is the longest comm the kernel keeps (TASK_COMM_LEN - 1).
const commLen = 15

// scanProc finds the processes called name: comm matches (truncated as the
// kernel does) and the base name of the executable or of argv[0] is name,
// so that a thread or script that merely renamed itself does not count.
func scanProc(name string) ([]Process, error) {
	if name == "" {
		return nil, errors.New("empty process name")
	}
	comm := name
	if len(comm) > commLen {
		comm = comm[:commLen]
	}
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	var ps []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(procPath(pid, "comm"))
		if err != nil || strings.TrimSuffix(string(b), "\n") != comm || !namedAs(pid, name) {
			continue
		}
		p, err := ReadProcess(pid)
		if errors.Is(err, ErrNoProcess) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func namedAs(pid int, name string) bool {
	if exe, err := os.Readlink(procPath(pid, "exe")); err == nil {
		if filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == name {
			return true
		}
	}
	cmdline, err := os.ReadFile(procPath(pid, "cmdline"))
	if err != nil {
		return false
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return filepath.Base(string(argv0)) == name
}
