package kernel

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// A Check is one kernel dependency of the tracer and whether the running
// kernel has it.
type Check struct {
	Name string
	// Min is the first Linux release that has it. Distribution kernels
	// may have it earlier (backports) or later (a configuration).
	Min string
	// Required: the tracer cannot run without it. The others choose the
	// mode (see Features.Mode).
	Required bool
	// Err is nil when the kernel has it. A missing feature is
	// ebpf.ErrNotSupported; any other error means the check itself failed
	// (often a missing capability), so the answer is unknown.
	Err error
}

// OK reports whether the kernel has the feature.
func (c Check) OK() bool { return c.Err == nil }

// Missing reports whether the kernel lacks the feature; neither OK nor
// Missing: the check failed.
func (c Check) Missing() bool { return errors.Is(c.Err, ebpf.ErrNotSupported) }

// Names of the checks.
const (
	UprobePrograms  = "BPF programs at uprobes"
	RingBuffer      = "BPF ring buffer"
	BoundedLoops    = "bounded loops"
	ProbeReadUser   = "bpf_probe_read_user"
	GetStack        = "bpf_get_stack"
	GlobalFuncs     = "global BPF functions"
	GlobalFuncPtrs  = "pointer arguments of global BPF functions"
	AttachCookies   = "attach cookies"
	UprobeMulti     = "uprobe_multi links"
	UprobeMultiPIDs = "uprobe_multi PID filter by process"
	// The syscall programs (Options.Syscalls in pkg/probe/syscalls)
	// need these two.
	RawTracepoints  = "BPF programs at raw tracepoints"
	ProbeReadKernel = "bpf_probe_read_kernel"
)

// Features is what the running kernel has.
type Features struct {
	Release string // uname -r
	Checks  []Check
}

// Has reports whether the check named name passed.
func (f Features) Has(name string) bool {
	for _, c := range f.Checks {
		if c.Name == name {
			return c.OK()
		}
	}
	return false
}

// check returns the check named name.
func (f Features) check(name string) Check {
	for _, c := range f.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{Name: name, Err: fmt.Errorf("%s: no such check", name)}
}

// Probe runs every check once per process and returns the results; later
// calls return the same. The checks load tiny BPF programs, so they need
// the privileges tracing needs, and RLIMIT_MEMLOCK raised first.
var Probe = sync.OnceValue(func() Features {
	_ = RaiseMemlock()
	f := Features{Release: release()}
	for _, c := range checks {
		f.Checks = append(f.Checks, Check{Name: c.name, Min: c.min, Required: c.required, Err: c.run()})
	}
	return f
})

// RaiseMemlock lifts RLIMIT_MEMLOCK, once per process. Before Linux 5.11
// BPF memory counts against it, per user: the default 64 KiB is taken by
// one map, and memory freed by another process of the same user is
// uncharged only later, so even the checks' tiny programs can fail with
// EPERM. The error says the limit could not be raised (no
// CAP_SYS_RESOURCE); it is nil where the cgroup accounts BPF memory.
var RaiseMemlock = sync.OnceValue(rlimit.RemoveMemlock)

var checks = []struct {
	name, min string
	required  bool
	run       func() error
}{
	{UprobePrograms, "4.1", true, func() error { return features.HaveProgramType(ebpf.Kprobe) }},
	{RingBuffer, "5.8", true, func() error { return features.HaveMapType(ebpf.RingBuf) }},
	{BoundedLoops, "5.3", true, features.HaveBoundedLoops},
	{ProbeReadUser, "5.5", true, func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnProbeReadUser) }},
	{GetStack, "4.18", true, func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetStack) }},
	{GlobalFuncs, "5.6", true, func() error { return haveGlobalFunc(false) }},
	{GlobalFuncPtrs, "5.12", false, func() error { return haveGlobalFunc(true) }},
	{AttachCookies, "5.15", false, func() error { return features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie) }},
	{UprobeMulti, "6.6", false, features.HaveBPFLinkUprobeMulti},
	{UprobeMultiPIDs, "6.10", false, haveUprobeMultiPIDFilter},
	{RawTracepoints, "4.17", false, func() error { return features.HaveProgramType(ebpf.RawTracepoint) }},
	{ProbeReadKernel, "5.5", false, func() error { return features.HaveProgramHelper(ebpf.RawTracepoint, asm.FnProbeReadKernel) }},
}

// release returns the kernel's release string, as uname -r prints it.
func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// haveGlobalFunc loads a program calling a global function with one
// argument: a pointer to the stack, or a scalar. A global function is
// verified once, not at each call site (Linux 5.6); before Linux 5.12 its
// arguments can only be scalars or the context: "Arg#0 type PTR in sub() is
// not supported yet".
func haveGlobalFunc(pointer bool) error {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64 := &btf.Int{Name: "u64", Size: 8}
	main := &btf.Func{Name: "main", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: i32, Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
	}}
	arg := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	var argType btf.Type = u64
	if pointer {
		// The address of a zero on the stack.
		arg = asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
		}
		argType = &btf.Pointer{Target: u64}
	}
	sub := &btf.Func{Name: "sub", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: i32, Params: []btf.FuncParam{{Name: "arg", Type: argType}},
	}}
	arg[0] = btf.WithFuncMetadata(arg[0].WithSymbol("main"), main)
	insns := append(arg,
		asm.Call.Label("sub"),
		asm.Return(),
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 0).WithSymbol("sub"), sub),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns, License: "GPL"})
	if err == nil {
		prog.Close()
		return nil
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w: %v", ebpf.ErrNotSupported, err)
	}
	return err
}

// haveUprobeMultiPIDFilter reports whether uprobe_multi links given a PID
// run the program in every thread of that process. Linux 6.6 to 6.9
// compared the PID with the thread (current != link->task, fixed by commit
// 46ba0e49b642, "bpf: fix multi-uprobe PID filtering logic", in 6.10 and
// the 6.6 and 6.9 stable series), so only the main thread's calls ran it: a
// Go program calls from every thread. Detected as libbpf does: since the
// fix, a negative PID is refused (EINVAL) before the path is looked at;
// before it, the path "/" fails first (EBADF).
func haveUprobeMultiPIDFilter() error {
	if err := features.HaveBPFLinkUprobeMulti(); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Kprobe,
		AttachType:   ebpf.AttachTraceUprobeMulti,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return err
	}
	defer prog.Close()
	ex, err := link.OpenExecutable("/")
	if err != nil {
		return err
	}
	// Address 1: 0 would have the library look for a symbol in "/".
	l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: []uint64{1}, PID: ^uint32(0)})
	switch {
	case errors.Is(err, unix.EINVAL):
		return nil
	case errors.Is(err, unix.EBADF), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: uprobe_multi filters by thread, not by process", ebpf.ErrNotSupported)
	case err == nil:
		l.Close()
		return errors.New("uprobe_multi attached to /, kernel bug?")
	}
	return err
}
