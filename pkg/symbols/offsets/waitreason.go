package offsets

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// The names of runtime.waitReason's values, indexed by value, as the
// runtime prints them in tracebacks (runtime.waitReasonStrings), per Go
// minor release. Each release's src/runtime/runtime2.go: the enumeration
// grows in the middle (Go 1.20 added the sync.Mutex and sync.RWMutex
// reasons, which Go 1.18 and 1.19 report as "semacquire"; Go 1.25 added
// "GOMAXPROCS updater (idle)"), and Go 1.26 reordered it. Tests check each
// table against the array in real builds.
var (
	waitReasons118 = []string{
		"", "GC assist marking", "IO wait", "chan receive (nil chan)", // 0
		"chan send (nil chan)", "dumping heap", "garbage collection", "garbage collection scan", // 4
		"panicwait", "select", "select (no cases)", "GC assist wait", // 8
		"GC sweep wait", "GC scavenge wait", "chan receive", "chan send", // 12
		"finalizer wait", "force gc (idle)", "semacquire", "sleep", // 16
		"sync.Cond.Wait", "timer goroutine (idle)", "trace reader (blocked)", "wait for GC cycle", // 20
		"GC worker (idle)", "preempted", "debug call", // 24
	}
	waitReasons120 = []string{
		"", "GC assist marking", "IO wait", "chan receive (nil chan)", // 0
		"chan send (nil chan)", "dumping heap", "garbage collection", "garbage collection scan", // 4
		"panicwait", "select", "select (no cases)", "GC assist wait", // 8
		"GC sweep wait", "GC scavenge wait", "chan receive", "chan send", // 12
		"finalizer wait", "force gc (idle)", "semacquire", "sleep", // 16
		"sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock", // 20
		"trace reader (blocked)", "wait for GC cycle", "GC worker (idle)", "GC worker (active)", // 24
		"preempted", "debug call", "GC mark termination", "stopping the world", // 28
	}
	waitReasons122 = []string{
		"", "GC assist marking", "IO wait", "chan receive (nil chan)", // 0
		"chan send (nil chan)", "dumping heap", "garbage collection", "garbage collection scan", // 4
		"panicwait", "select", "select (no cases)", "GC assist wait", // 8
		"GC sweep wait", "GC scavenge wait", "chan receive", "chan send", // 12
		"finalizer wait", "force gc (idle)", "semacquire", "sleep", // 16
		"sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock", // 20
		"trace reader (blocked)", "wait for GC cycle", "GC worker (idle)", "GC worker (active)", // 24
		"preempted", "debug call", "GC mark termination", "stopping the world", // 28
		"flushing proc caches", "trace goroutine status", "trace proc status", "page trace flush", // 32
		"coroutine", // 36
	}
	waitReasons124 = []string{
		"", "GC assist marking", "IO wait", "chan receive (nil chan)", // 0
		"chan send (nil chan)", "dumping heap", "garbage collection", "garbage collection scan", // 4
		"panicwait", "select", "select (no cases)", "GC assist wait", // 8
		"GC sweep wait", "GC scavenge wait", "chan receive", "chan send", // 12
		"finalizer wait", "force gc (idle)", "semacquire", "sleep", // 16
		"sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", "sync.RWMutex.Lock", // 20
		"sync.WaitGroup.Wait", "trace reader (blocked)", "wait for GC cycle", "GC worker (idle)", // 24
		"GC worker (active)", "preempted", "debug call", "GC mark termination", // 28
		"stopping the world", "flushing proc caches", "trace goroutine status", "trace proc status", // 32
		"page trace flush", "coroutine", "GC weak to strong wait", "synctest.Run", // 36
		"synctest.Wait", "chan receive (synctest)", "chan send (synctest)", "select (synctest)", // 40
	}
	waitReasons125 = []string{
		"", "GC assist marking", "IO wait", "chan receive (nil chan)", // 0
		"chan send (nil chan)", "dumping heap", "garbage collection", "garbage collection scan", // 4
		"panicwait", "select", "select (no cases)", "GC assist wait", // 8
		"GC sweep wait", "GC scavenge wait", "chan receive", "chan send", // 12
		"finalizer wait", "force gc (idle)", "GOMAXPROCS updater (idle)", "semacquire", // 16
		"sleep", "sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", // 20
		"sync.RWMutex.Lock", "sync.WaitGroup.Wait", "trace reader (blocked)", "wait for GC cycle", // 24
		"GC worker (idle)", "GC worker (active)", "preempted", "debug call", // 28
		"GC mark termination", "stopping the world", "flushing proc caches", "trace goroutine status", // 32
		"trace proc status", "page trace flush", "coroutine", "GC weak to strong wait", // 36
		"synctest.Run", "synctest.Wait", "chan receive (durable)", "chan send (durable)", // 40
		"select (durable)", "sync.WaitGroup.Wait (durable)", "cleanup wait", // 44
	}
	waitReasons126 = []string{
		"", "GC assist marking", "IO wait", "dumping heap", // 0
		"garbage collection", "garbage collection scan", "panicwait", "GC assist wait", // 4
		"GC sweep wait", "GC scavenge wait", "finalizer wait", "force gc (idle)", // 8
		"GOMAXPROCS updater (idle)", "semacquire", "sleep", "chan receive (nil chan)", // 12
		"chan send (nil chan)", "select (no cases)", "select", "chan receive", // 16
		"chan send", "sync.Cond.Wait", "sync.Mutex.Lock", "sync.RWMutex.RLock", // 20
		"sync.RWMutex.Lock", "sync.WaitGroup.Wait", "trace reader (blocked)", "wait for GC cycle", // 24
		"GC worker (idle)", "GC worker (active)", "preempted", "debug call", // 28
		"GC mark termination", "stopping the world", "flushing proc caches", "trace goroutine status", // 32
		"trace proc status", "page trace flush", "coroutine", "GC weak to strong wait", // 36
		"synctest.Run", "synctest.Wait", "chan receive (durable)", "chan send (durable)", // 40
		"select (durable)", "sync.WaitGroup.Wait (durable)", "cleanup wait", // 44
	}
)

var waitReasons = map[int][]string{
	18: waitReasons118, 19: waitReasons118,
	20: waitReasons120, 21: waitReasons120,
	22: waitReasons122, 23: waitReasons122,
	24: waitReasons124,
	25: waitReasons125,
	26: waitReasons126,
}

// waitReasonStrings is the runtime's array of the names.
const waitReasonStrings = "runtime.waitReasonStrings"

// WaitReasons returns the names of runtime.waitReason's values, indexed by
// value: from the table of known Go releases, else from the executable's
// own runtime.waitReasonStrings when it has a symbol table.
func WaitReasons(f *symbols.File) ([]string, error) {
	if _, err := f.ELF(); err != nil {
		return nil, err
	}
	if minor, ok := symbols.GoMinor(f.GoVersion); ok {
		if names, ok := waitReasons[minor]; ok {
			return slices.Clone(names), nil
		}
	}
	names, err := f.Strings(waitReasonStrings)
	if errors.Is(err, symbols.ErrNoSymbol) {
		return nil, fmt.Errorf("wait reasons for %q without a symbol table: %w", f.GoVersion, ErrUnknownGoVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("wait reasons for %q: %w", f.GoVersion, err)
	}
	return names, nil
}

// WaitReasonsFrom is WaitReasons, falling back to the names that `tracer
// offsets` recorded from an unstripped build of the same code in o (nil: no
// offsets file).
func WaitReasonsFrom(f *symbols.File, o *File) ([]string, error) {
	names, err := WaitReasons(f)
	if err == nil || o == nil {
		return names, err
	}
	if len(o.WaitReasons) == 0 {
		return nil, fmt.Errorf("%w, nor does the offsets file have them", err)
	}
	if cerr := o.Check(f); cerr != nil {
		return nil, fmt.Errorf("%w, and the offsets file cannot supply them: %v", err, cerr)
	}
	return slices.Clone(o.WaitReasons), nil
}
