package kernel

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A Capability is one the tracer uses, whether this process holds it, and
// what for.
type Capability struct {
	Name string // CAP_BPF
	Held bool   // in the effective set
	For  string
	// Needed: tracing needs it here, given the mode and the capabilities
	// held (see Need).
	Needed bool
}

// Need marks the capabilities tracing needs in mode m: CAP_BPF and
// CAP_PERFMON, or CAP_SYS_ADMIN in their place; CAP_SYS_ADMIN for perf
// uprobes; CAP_SYS_PTRACE for a privileged target; CAP_SYS_RESOURCE where
// the memlock limit must be raised (memlock: it could not be).
func Need(caps []Capability, m Mode, memlock bool) {
	held := map[string]bool{}
	for _, c := range caps {
		held[c.Name] = c.Held
	}
	for i, c := range caps {
		switch c.Name {
		case "CAP_BPF", "CAP_PERFMON":
			caps[i].Needed = !held["CAP_SYS_ADMIN"]
		case "CAP_SYS_ADMIN":
			caps[i].Needed = !m.Multi || !held["CAP_BPF"] || !held["CAP_PERFMON"]
		case "CAP_SYS_PTRACE":
			caps[i].Needed = true
		case "CAP_SYS_RESOURCE":
			caps[i].Needed = memlock
		}
	}
}

// capabilities are those the tracer uses, by bit number.
var capabilities = []struct {
	name string
	bit  uint
	for_ string
}{
	{"CAP_BPF", 39, "load the BPF programs and create their maps (Linux 5.8; before, CAP_SYS_ADMIN)"},
	{"CAP_PERFMON", 38, "BPF programs that read user memory and stacks, and perf uprobes (Linux 5.8; before, CAP_SYS_ADMIN)"},
	{"CAP_SYS_ADMIN", 21, "perf uprobes on kernels with the fix for CVE-2025-38466 (6.16; stable 5.10.240, 5.15.189, 6.1.146), which uprobe_multi links do without; stands in for CAP_BPF and CAP_PERFMON"},
	{"CAP_SYS_PTRACE", 19, "read /proc/PID/{exe,maps,root} of a target holding capabilities this process does not (cilium-agent does)"},
	{"CAP_SYS_RESOURCE", 24, "raise RLIMIT_MEMLOCK, which BPF memory counts against before Linux 5.11"},
}

// Capabilities reads which of the capabilities the tracer uses this
// process holds.
func Capabilities() ([]Capability, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	eff, err := capEff(string(status))
	if err != nil {
		return nil, err
	}
	var out []Capability
	for _, c := range capabilities {
		out = append(out, Capability{Name: c.name, Held: eff&(1<<c.bit) != 0, For: c.for_})
	}
	return out, nil
}

// capEff parses the effective capability set from /proc/PID/status.
func capEff(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff in /proc/self/status")
}

// A Setting is a kernel setting that can get in the way of tracing.
type Setting struct {
	Name  string
	Value string // as read; empty when it could not be
	Err   error  // why it could not be read
	// Note says what the value means for the tracer.
	Note string
}

// Settings reads panic_on_warn, the lockdown mode and
// perf_event_paranoid, and says what each means for the tracer.
func Settings() []Setting {
	var out []Setting
	s := read("kernel.panic_on_warn", "/proc/sys/kernel/panic_on_warn")
	switch s.Value {
	case "0":
		s.Note = "a kernel WARNING does not panic the node"
	case "":
	default:
		s.Note = "a kernel WARNING panics the node; the tracer's BPF maps are preallocated, so loading them warns on no kernel known (5.10 warns about maps that allocate at run time in tracing programs)"
	}
	out = append(out, s)

	s = read("lockdown", "/sys/kernel/security/lockdown")
	if i, j := strings.Index(s.Value, "["), strings.Index(s.Value, "]"); i >= 0 && j > i {
		s.Value = s.Value[i+1 : j]
	}
	switch s.Value {
	case "none":
		s.Note = "no restriction"
	case "integrity":
		s.Note = "forbids BPF writes to user memory, which the tracer does not do"
	case "confidentiality":
		s.Note = "forbids BPF reads of kernel memory and tracefs; the tracer reads user memory only and attaches through perf_event_open or BPF links"
	case "":
		s.Note = "securityfs not mounted, or no lockdown LSM: nothing enforced by it"
	}
	out = append(out, s)

	s = read("kernel.perf_event_paranoid", "/proc/sys/kernel/perf_event_paranoid")
	if n, err := strconv.Atoi(s.Value); err == nil {
		s.Note = "does not apply with CAP_PERFMON or CAP_SYS_ADMIN"
		if n >= 3 {
			s.Note = "3 or more: Debian and Ubuntu kernels refuse perf_event_open, which perf uprobes need, without CAP_SYS_ADMIN"
		}
	}
	out = append(out, s)
	return out
}

func read(name, path string) Setting {
	b, err := os.ReadFile(path)
	if err != nil {
		return Setting{Name: name, Err: err}
	}
	return Setting{Name: name, Value: strings.TrimSpace(string(b))}
}
