package symbols

// A Frame is one source-level frame at a program counter. A PC inside inlined
// code yields several frames: the inlined ones first, the physical function
// last.
type Frame struct {
	PC      uint64 // virtual address in the executable's own address space
	Func    string // fully qualified Go name, e.g. "main.(*T).m"
	File    string
	Line    int
	Inlined bool // this frame was inlined into the next one
}
