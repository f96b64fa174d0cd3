package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/cilium-tracer/tracer/pkg/probe/kernel"
)

// A Diagnosis is what an operator must know before tracing on a node: what
// the kernel has, the capabilities held, the settings that can get in the
// way, the mode the probes will run in, and whether they load and attach.
type Diagnosis struct {
	Features     kernel.Features
	Capabilities []kernel.Capability
	CapErr       error // reading the capabilities failed
	Settings     []kernel.Setting
	Mode         kernel.Mode
	ModeErr      error // a required feature is missing, or could not be checked
	// Memlock: BPF memory counts against RLIMIT_MEMLOCK (before Linux
	// 5.11), which cannot be raised; nil where it can, or where the
	// cgroup accounts for it.
	Memlock error
	Load    error // loading the BPF programs of Mode
	Attach  error // attaching a uprobe as Mode does
}

// Diagnose checks the running kernel and this process's privileges. It
// loads the BPF programs the mode runs and attaches a uprobe at the entry
// point of its own executable, which runs once at start: nothing it traces.
func Diagnose() Diagnosis {
	d := Diagnosis{Memlock: kernel.RaiseMemlock(), Features: kernel.Probe(), Settings: kernel.Settings()}
	d.Capabilities, d.CapErr = kernel.Capabilities()
	d.Mode, d.ModeErr = d.Features.Mode()
	kernel.Need(d.Capabilities, d.Mode, d.Memlock != nil)
	if d.ModeErr != nil {
		return d
	}
	d.Load = checkLoad(d.Mode)
	d.Attach = checkAttach(d.Mode)
	return d
}

// Err says why tracing cannot work; nil if it can.
func (d Diagnosis) Err() error {
	switch {
	case d.ModeErr != nil:
		return d.ModeErr
	case d.Load != nil:
		return fmt.Errorf("load BPF programs: %w", d.Load)
	case d.Attach != nil:
		return fmt.Errorf("attach a uprobe: %w", d.Attach)
	}
	return nil
}

// checkLoad loads the BPF programs and maps of mode m, and frees them.
func checkLoad(m kernel.Mode) error {
	spec, err := loadSpec(m)
	if err != nil {
		return err
	}
	if m.Multi {
		for _, p := range spec.Programs {
			p.AttachType = ebpf.AttachTraceUprobeMulti
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return err
	}
	coll.Close()
	return nil
}

// checkAttach attaches a program that does nothing at the entry point of
// this process's executable, as mode m attaches: a perf uprobe or a
// uprobe_multi link, for this process.
func checkAttach(m kernel.Mode) error {
	off, err := entryOffset("/proc/self/exe")
	if err != nil {
		return err
	}
	spec := &ebpf.ProgramSpec{
		Type:         ebpf.Kprobe,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	}
	if m.Multi {
		spec.AttachType = ebpf.AttachTraceUprobeMulti
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return err
	}
	defer prog.Close()
	ex, err := link.OpenExecutable("/proc/self/exe")
	if err != nil {
		return err
	}
	var l link.Link
	if m.Multi {
		l, err = ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: []uint64{off}, PID: uint32(os.Getpid())})
	} else {
		l, err = ex.Uprobe("", prog, &link.UprobeOptions{Address: off, PID: os.Getpid()})
	}
	if err != nil {
		return err
	}
	return l.Close()
}

// entryOffset returns the file offset of the ELF entry point of path.
func entryOffset(path string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Vaddr <= f.Entry && f.Entry < p.Vaddr+p.Filesz {
			return f.Entry - p.Vaddr + p.Off, nil
		}
	}
	return 0, errors.New("entry point in no executable segment")
}
