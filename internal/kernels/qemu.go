package kernels

import (
	"bufio"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// A Machine is how qemu emulates one architecture.
type Machine struct {
	Qemu    string   // the emulator
	Package string   // the Debian package that has it
	Accel   string   // -accel
	Args    []string // machine and CPU
	Console string   // the guest's serial console
}

// Machines by GOARCH. /dev/kvm on the machines this runs on is a nested
// device on which a stock kernel hardly boots, so both emulate (TCG).
//
// An x86 guest emulated on several host threads (thread=multi, qemu 7.2)
// breaks uprobes: in 1 of 1 to 15 runs of pkg/session's TestTraceAgent,
// on 6.1, 6.12 and 6.18 alike, the traced Go program returned to garbage
// or faulted inside the page where x86 single-steps probed instructions
// out of line, or a RET probe missed a return; the machine's own 6.18
// under KVM never does. On one thread 25 runs of 25 passed on 6.1, 20 of
// 20 on 6.12. arm64 emulates a RET instead of stepping it, and 25 of 25
// passed on several threads on 6.12.
//
// pauth-impdef=on makes arm64's pointer authentication cheap to emulate:
// the kernel boots about three times faster than with plain -cpu max.
var Machines = map[string]Machine{
	"amd64": {Qemu: "qemu-system-x86_64", Package: "qemu-system-x86", Accel: "tcg,thread=single",
		Args: []string{"-cpu", "max"}, Console: "ttyS0"},
	"arm64": {Qemu: "qemu-system-aarch64", Package: "qemu-system-arm", Accel: "tcg,thread=multi",
		Args: []string{"-M", "virt", "-cpu", "max,pauth-impdef=on"}, Console: "ttyAMA0"},
}

// A VM is one boot of a kernel with an initramfs.
type VM struct {
	Arch    string // GOARCH, a key of Machines
	Kernel  string // the kernel image
	Initrd  string // the initramfs
	Cmdline string // added to the console and panic settings
	// Silence is how long the guest may print nothing on its console
	// before it is taken for hung and stopped.
	Silence time.Duration
}

// controls matches the terminal control sequences firmware and kernel
// print on the console (reset, clear screen, line wrap, colours).
var controls = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|.)`)

// Run boots vm, calls line with each line the guest prints on its
// console (without terminal control sequences), and returns when qemu
// exits: the guest powered off, or its kernel panicked (panic=-1 reboots,
// and -no-reboot makes that an exit).
func (vm VM) Run(line func(string)) error {
	m, ok := Machines[vm.Arch]
	if !ok {
		return fmt.Errorf("no machine for %s", vm.Arch)
	}
	if _, err := exec.LookPath(m.Qemu); err != nil {
		return fmt.Errorf("%s not found: install Debian's %s (.ci/run does)", m.Qemu, m.Package)
	}
	args := append([]string{"-accel", m.Accel, "-smp", "2", "-m", "2G",
		"-nographic", "-no-reboot",
		"-kernel", vm.Kernel, "-initrd", vm.Initrd,
		// quiet: only errors reach the console while the checks
		// print there; /init prints the whole log at the end.
		"-append", "console=" + m.Console + " panic=-1 oops=panic quiet " + vm.Cmdline,
	}, m.Args...)
	cmd := exec.Command(m.Qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- controls.ReplaceAllString(strings.TrimRight(sc.Text(), "\r"), "")
		}
	}()
	var hung error
	timer := time.NewTimer(vm.Silence)
	defer timer.Stop()
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				done = true
				break
			}
			line(l)
			timer.Reset(vm.Silence)
		case <-timer.C:
			hung = fmt.Errorf("the guest printed nothing for %v", vm.Silence)
			cmd.Process.Kill()
		}
	}
	err = cmd.Wait()
	if hung != nil {
		return hung
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %v: %s", m.Qemu, err, strings.TrimSpace(stderr.String()))
		}
		return err
	}
	return nil
}
