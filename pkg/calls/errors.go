package calls

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium-tracer/tracer/pkg/probe"
	"github.com/cilium-tracer/tracer/pkg/symbols/args"
)

// callError names the error's dynamic type from the executable and puts
// its message together as its Error method would.
func (b *Builder) callError(pid int, e *probe.ErrorValue) *Error {
	out := &Error{Type: b.typeName(pid, e.Type, e.Hash)}
	part := func(k int) string {
		v := e.Parts[k]
		s := strings.ToValidUTF8(string(v.Data), "\uFFFD")
		if v.Len > uint64(len(v.Data)) {
			s += "..."
		}
		return s
	}
	inner := func() string {
		switch {
		case e.InnerType == 0:
			return "<nil>"
		case e.InnerKind == args.ErrorText:
			return part(2)
		case e.InnerKind == args.ErrorErrno:
			return syscall.Errno(e.Word).Error()
		}
		return "<" + b.typeName(pid, e.InnerType, 0) + ">"
	}
	switch e.Kind {
	case args.ErrorText:
		out.Message = part(0)
	case args.ErrorPath:
		out.Message = part(0) + " " + part(1) + ": " + inner()
	case args.ErrorSyscall:
		out.Message = part(0) + ": " + inner()
	case args.ErrorExit:
		out.Message = exitStatus(syscall.WaitStatus(e.Word))
	case args.ErrorErrno:
		out.Message = syscall.Errno(e.Word).Error()
	}
	return out
}

// exitStatus is os.ProcessState.String on Linux.
func exitStatus(ws syscall.WaitStatus) string {
	var s string
	switch {
	case ws.Exited():
		s = "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s = "signal: " + ws.Signal().String()
	case ws.Stopped():
		s = "stop signal: " + ws.StopSignal().String()
		if ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() != 0 {
			s += " (trap " + strconv.Itoa(ws.TrapCause()) + ")"
		}
	case ws.Continued():
		s = "continued"
	}
	if ws.CoreDump() {
		s += " (core dumped)"
	}
	return s
}

// typeName names the type whose descriptor is at runtime address addr in
// process pid. When the process's load bias is unknown (a PIE traced in
// every process, without stacks to learn it from), the type's hash names
// it among the executable's itabs, if hash is not 0 and one type there has
// it; else the name is the address.
func (b *Builder) typeName(pid int, addr uint64, hash uint32) string {
	bias, ok := b.Bias, true
	if b.BiasOf != nil {
		bias, ok = b.BiasOf(pid)
	}
	if !ok && hash != 0 {
		if n, ok := b.typeByHash(hash); ok {
			return n
		}
	}
	if !ok || addr == 0 {
		return fmt.Sprintf("?%#x", addr)
	}
	if n, ok := b.typeNames[addr-bias]; ok {
		return n
	}
	n, err := b.File.TypeName(addr - bias)
	if err != nil {
		n = fmt.Sprintf("?%#x", addr)
	}
	if b.typeNames == nil {
		b.typeNames = map[uint64]string{}
	}
	b.typeNames[addr-bias] = n
	return n
}

// typeByHash names the type of the executable's itabs with this hash, if
// exactly one has it.
func (b *Builder) typeByHash(hash uint32) (string, bool) {
	if b.hashNames == nil {
		b.hashNames = map[uint32]string{}
		its, _ := b.File.Itabs() // none: names stay addresses
		for _, it := range its {
			if n, dup := b.hashNames[it.Hash]; dup && n != it.Type {
				it.Type = "" // two types: neither
			}
			b.hashNames[it.Hash] = it.Type
		}
	}
	n := b.hashNames[hash]
	return n, n != ""
}
