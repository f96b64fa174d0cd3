package container

import (
	"bufio"
	"bytes"
	"strings"
)

// scopePrefixes maps the unit-name prefixes that systemd-managed runtimes
// give a container's cgroup ("docker-<id>.scope") to the runtime.
var scopePrefixes = []struct {
	prefix  string
	runtime Runtime
}{
	{"docker-", RuntimeDocker},
	{"cri-containerd-", RuntimeContainerd},
	{"nerdctl-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"libpod-", RuntimePodman},
}

// ParseCgroup finds the container ID and runtime in the contents of
// /proc/PID/cgroup (cgroup v1, v2 or hybrid; cgroupfs or systemd driver).
// It returns "" and RuntimeNone for a process outside any container. A bare
// ID outside Docker's and Kubernetes' hierarchies gives the ID with
// RuntimeNone: the path alone does not tell who created it.
func ParseCgroup(b []byte) (id string, rt Runtime) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path; the path may contain ':'.
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if id, rt := parseCgroupPath(parts[2]); id != "" {
			return id, rt
		}
	}
	return "", RuntimeNone
}

// parseCgroupPath looks at the path components from the innermost out, so
// that nested containers (Docker in Docker) give the innermost one.
func parseCgroupPath(path string) (string, Runtime) {
	comps := strings.Split(path, "/")
	for i := len(comps) - 1; i >= 0; i-- {
		c := strings.TrimSuffix(comps[i], ".scope")
		for _, sp := range scopePrefixes {
			rest, ok := strings.CutPrefix(c, sp.prefix)
			if ok && isContainerID(rest) {
				return rest, sp.runtime
			}
		}
		if !isContainerID(c) {
			continue
		}
		switch {
		case i > 0 && comps[i-1] == "docker":
			return c, RuntimeDocker
		case strings.Contains(path, "kubepods"):
			// The kubelet's cgroupfs driver names the container by its bare
			// ID; containerd is the runtime of nearly every current cluster.
			return c, RuntimeContainerd
		default:
			return c, RuntimeNone
		}
	}
	return "", RuntimeNone
}

// isContainerID reports whether s is a 64-digit lowercase hex ID, the form
// Docker, containerd (CRI) and CRI-O use.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
