package goroutine

// Status is a goroutine's scheduling state: runtime.g's atomicstatus
// without the _Gscan bit. The values are the runtime's _G constants, the
// same in every Go release since 1.18; Go 1.26 added Leaked and DeadExtra.
type Status uint32

const (
	Idle      Status = iota // just allocated, not yet initialized
	Runnable                // on a run queue
	Running                 // executing Go code on a thread (State.M)
	Syscall                 // in a system call on a thread (State.M)
	Waiting                 // parked in the runtime, for State.WaitReason
	_                       // _Gmoribund_unused
	Dead                    // exited or not yet started: the g is free
	_                       // _Genqueue_unused
	CopyStack               // its stack is being moved
	Preempted               // stopped itself for a suspendG preemption
	Leaked                  // found leaked by the garbage collector (Go 1.26)
	DeadExtra               // dead, kept for a cgo callback's thread (Go 1.26)
)

// gScan is the bit the garbage collector sets in atomicstatus while it
// holds the goroutine to scan its stack.
const gScan = 0x1000

// statusNames are the runtime's own names (runtime.gStatusStrings).
var statusNames = [...]string{
	Idle:      "idle",
	Runnable:  "runnable",
	Running:   "running",
	Syscall:   "syscall",
	Waiting:   "waiting",
	Dead:      "dead",
	CopyStack: "copystack",
	Preempted: "preempted",
	Leaked:    "leaked",
	DeadExtra: "waiting for cgo callback",
}

func (s Status) String() string {
	if int(s) < len(statusNames) && statusNames[s] != "" {
		return statusNames[s]
	}
	return "unknown"
}

// known reports whether s is a state the runtime uses.
func (s Status) known() bool {
	return int(s) < len(statusNames) && statusNames[s] != ""
}
