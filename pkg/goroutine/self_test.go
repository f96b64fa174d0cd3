package goroutine

import (
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"slices"
	"testing"
	"unsafe"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// selfReader reads the test process itself, so that tests can lay out a
// runtime.g or a stack as they please.
func selfReader(t *testing.T) *Reader {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := symbols.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	r, err := NewReader(os.Getpid(), f, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func addr[T any](p *T) uint64 { return uint64(uintptr(unsafe.Pointer(p))) }

// A runtime.g laid out by hand reads field by field, the _Gscan bit
// apart; a status the runtime does not use, or inverted stack bounds, is no
// goroutine.
func TestReadLayout(t *testing.T) {
	r := selfReader(t)
	g, err := offsets.GOffsets(r.file)
	if err != nil {
		t.Fatal(err)
	}
	names, err := offsets.WaitReasons(r.file)
	if err != nil {
		t.Fatal(err)
	}
	mutex := slices.Index(names, "sync.Mutex.Lock")
	buf := make([]byte, 1024)
	put := func(off, v uint64) { binary.LittleEndian.PutUint64(buf[off:], v) }
	put(g.StackLo, 0x1000)
	put(g.StackHi, 0x9000)
	put(g.SchedSP, 0x8000)
	put(g.SchedPC, 0x401234)
	put(g.SchedBP, 0x8010)
	put(g.Goid, 77)
	binary.LittleEndian.PutUint32(buf[g.Status:], gScan|uint32(Waiting))
	buf[g.WaitReason] = byte(mutex)
	s, err := r.Read(addr(&buf[0]))
	want := State{
		G: addr(&buf[0]), Goid: 77, Status: Waiting, Scan: true,
		WaitReason: WaitReason{"sync.Mutex.Lock", Mutex},
		PC:         0x401234, SP: 0x8000, BP: 0x8010, StackLo: 0x1000, StackHi: 0x9000,
	}
	if err != nil || s != want {
		t.Errorf("Read = %+v, %v; want %+v", s, err, want)
	}

	// A running goroutine has an M and no wait reason, whatever the
	// field holds.
	put(g.M, 0xc000100000)
	binary.LittleEndian.PutUint32(buf[g.Status:], uint32(Running))
	if s, err := r.Read(addr(&buf[0])); err != nil || s.Status != Running || s.M != 0xc000100000 || s.WaitReason != (WaitReason{}) {
		t.Errorf("Read of a running goroutine = %+v, %v", s, err)
	}

	binary.LittleEndian.PutUint32(buf[g.Status:], 5) // _Gmoribund_unused
	if s, err := r.Read(addr(&buf[0])); !errors.Is(err, ErrNotGoroutine) {
		t.Errorf("Read of status 5 = %+v, %v; want ErrNotGoroutine", s, err)
	}
	binary.LittleEndian.PutUint32(buf[g.Status:], uint32(Waiting))
	put(g.StackLo, 0x10000)
	if s, err := r.Read(addr(&buf[0])); !errors.Is(err, ErrNotGoroutine) {
		t.Errorf("Read with inverted stack bounds = %+v, %v; want ErrNotGoroutine", s, err)
	}
}

//go:noinline
func waiter() int { return 1 }

// Where ends on every malformed chain of frame records: a cycle, a record
// lower than the last, a misaligned one, one outside the stack, a return
// address of 0 or outside Go code; and a well-formed chain it follows for
// 64 frames at most.
func TestWhereBounded(t *testing.T) {
	r := selfReader(t)
	// The return address of a call in waiter: a frame of this package,
	// neither runtime nor sync.
	ret := uint64(reflect.ValueOf(waiter).Pointer()) + 1
	stack := make([]uint64, 4096)
	lo, hi := addr(&stack[0]), addr(&stack[0])+uint64(len(stack))*8
	at := func(i int) uint64 { return lo + uint64(i)*8 }
	// record writes a frame record at stack[i].
	record := func(i int, next, ret uint64) { stack[i], stack[i+1] = next, ret }
	s := State{Status: Waiting, PC: ret, SP: at(0), StackLo: lo, StackHi: hi}
	where := func(bp uint64) []symbols.Frame {
		t.Helper()
		s.BP = bp
		fr, err := r.Where(s, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fr {
			if f.Func != "github.com/cilium-tracer/tracer/pkg/goroutine.waiter" {
				t.Fatalf("frame %+v", f)
			}
		}
		return fr
	}

	cases := []struct {
		name   string
		setup  func() uint64 // lays the records out, returns BP
		frames int           // the innermost frame's included
	}{
		{"cycle", func() uint64 { record(10, at(10), ret); return at(10) }, 2},
		{"down", func() uint64 {
			record(20, at(30), ret)
			record(30, at(10), ret)
			record(10, at(20), ret)
			return at(20)
		}, 3},
		{"misaligned", func() uint64 { record(10, at(20)+1, ret); return at(10) }, 2},
		{"above the stack", func() uint64 { record(10, hi, ret); return at(10) }, 2},
		{"below the stack", func() uint64 { return lo - 16 }, 1},
		{"zero return", func() uint64 { record(10, at(20), ret); record(20, at(30), 0); return at(10) }, 2},
		{"not Go", func() uint64 { record(10, at(20), ret); record(20, at(30), 1); return at(10) }, 2},
		{"end", func() uint64 { record(10, 0, ret); return at(10) }, 2},
		{"long", func() uint64 {
			for i := 0; i < 1000; i++ {
				record(4*i, at(4*i+4), ret)
			}
			return at(0)
		}, maxDepth},
		// The chain crosses from one read of the stack to the next.
		{"windows", func() uint64 {
			record(10, at(10+stackWindow/8+2), ret)
			record(10+stackWindow/8+2, 0, ret)
			return at(10)
		}, 3},
	}
	for _, c := range cases {
		clear(stack)
		if got := len(where(c.setup())); got != c.frames {
			t.Errorf("%s: %d frames, want %d", c.name, got, c.frames)
		}
	}

	s.Status = Running
	if _, err := r.Where(s, 8); !errors.Is(err, ErrNotParked) {
		t.Errorf("Where of a running goroutine: %v", err)
	}
	s.Status = Waiting
	if fr, err := r.Where(s, 0); fr != nil || err != nil {
		t.Errorf("Where(0) = %v, %v", fr, err)
	}
}

func TestFuncPackage(t *testing.T) {
	for fn, want := range map[string]string{
		"runtime.gopark":                    "runtime",
		"internal/sync.(*Mutex).lockSlow":   "internal/sync",
		"sync.(*RWMutex).RLock":             "sync",
		"sync/atomic.(*Int64).Add":          "sync/atomic",
		"internal/runtime/syscall.Syscall6": "internal/runtime/syscall",
		"main.main.func1":                   "main",
		"github.com/cilium/cilium/pkg/endpoint.(*Endpoint).lockAlive":          "github.com/cilium/cilium/pkg/endpoint",
		"github.com/cilium/cilium/pkg/lock.(*Map[go.shape.string]).Load":       "github.com/cilium/cilium/pkg/lock",
		"main.apply[go.shape.*github.com/cilium/cilium/pkg/policy.Repository]": "main",
		"k8s.io/client-go/tools/cache.(*Store[...]).Get":                       "k8s.io/client-go/tools/cache",
	} {
		if got := funcPackage(fn); got != want {
			t.Errorf("funcPackage(%q) = %q, want %q", fn, got, want)
		}
	}
}
