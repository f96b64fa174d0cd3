package args

import (
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// An ErrorKind says how an error's message is made of what the BPF programs
// read from its value.
type ErrorKind uint32

const (
	// ErrorText: the message is the string Str[0]
	// (errors.errorString.s, fmt.wrapError.msg, fmt.wrapErrors.msg).
	ErrorText ErrorKind = 1 + iota
	// ErrorPath: *fs.PathError, Op + " " + Path + ": " + Err.
	ErrorPath
	// ErrorSyscall: *os.SyscallError, Syscall + ": " + Err.
	ErrorSyscall
	// ErrorExit: *exec.ExitError, its ProcessState's wait status (Word).
	ErrorExit
	// ErrorErrno: syscall.Errno, the number (Word).
	ErrorErrno
)

// An ErrorLayout is where the parts of an error type's message are in its
// value (what the interface's data word points at); -1: absent.
type ErrorLayout struct {
	Kind ErrorKind
	Str  [2]int32 // Go strings
	// Inner is an error interface the message ends with, read one level
	// deep.
	Inner int32
	// Word is a word in the value; WordDeref >= 0 makes it a pointer to
	// follow, to the uint32 at WordDeref past it.
	Word, WordDeref int32
}

// errorLayouts are the concrete error types whose messages the BPF programs
// read, by name as %T prints them. Their layouts have not changed since Go
// 1.16 (checked against DWARF per Go release in the tests).
var errorLayouts = map[string]ErrorLayout{
	"*errors.errorString": {Kind: ErrorText, Str: [2]int32{0, -1}, Inner: -1, Word: -1, WordDeref: -1},
	"*fmt.wrapError":      {Kind: ErrorText, Str: [2]int32{0, -1}, Inner: -1, Word: -1, WordDeref: -1},
	"*fmt.wrapErrors":     {Kind: ErrorText, Str: [2]int32{0, -1}, Inner: -1, Word: -1, WordDeref: -1},
	"*fs.PathError":       {Kind: ErrorPath, Str: [2]int32{0, 16}, Inner: 32, Word: -1, WordDeref: -1},
	"*os.SyscallError":    {Kind: ErrorSyscall, Str: [2]int32{0, -1}, Inner: 16, Word: -1, WordDeref: -1},
	// ExitError embeds *os.ProcessState first; ProcessState{pid int,
	// status syscall.WaitStatus, ...}.
	"*exec.ExitError": {Kind: ErrorExit, Str: [2]int32{-1, -1}, Inner: -1, Word: 0, WordDeref: 8},
	// A non-pointer value in an interface: the data word points at it.
	"syscall.Errno": {Kind: ErrorErrno, Str: [2]int32{-1, -1}, Inner: -1, Word: 0, WordDeref: -1},
}

// An ErrorType is a concrete error type of an executable whose message the
// BPF programs read, identified by the hash its itabs carry.
type ErrorType struct {
	Name string
	Hash uint32
	ErrorLayout
}

// ErrorTypes returns the error types of f whose messages can be read: those
// of errorLayouts that f's static itabs implement error with. Two types
// with one hash would be told apart by nothing, so neither is read.
func ErrorTypes(f *symbols.File) ([]ErrorType, error) {
	its, err := f.Itabs()
	if err != nil {
		return nil, err
	}
	byHash := map[uint32]string{}
	var out []ErrorType
	for _, it := range its {
		if other, ok := byHash[it.Hash]; ok && other != it.Type {
			byHash[it.Hash] = "" // a collision
			continue
		}
		byHash[it.Hash] = it.Type
	}
	for _, it := range its {
		l, ok := errorLayouts[it.Type]
		if it.Interface != "error" || !ok || byHash[it.Hash] != it.Type {
			continue
		}
		byHash[it.Hash] = "" // once
		out = append(out, ErrorType{Name: it.Type, Hash: it.Hash, ErrorLayout: l})
	}
	return out, nil
}
