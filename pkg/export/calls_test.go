package export

import (
	"math/rand/v2"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

const (
	fnRegenerate    = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
	fnRegenerateBPF = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF"
	fnSyncPolicyMap = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump"
	fnResolve       = "github.com/cilium/cilium/pkg/policy.(*Repository).resolvePolicyLocked"
)

var testT0 = time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)

func frame(fn, file string, line int, pc uint64) symbols.Frame {
	return symbols.Frame{PC: pc, Func: fn, File: file, Line: line}
}

// regenerationTree returns one Endpoint.regenerate call with regenerateBPF
// and the policy-map sync nested under it, children first as the BPF side
// reports them. regenerateBPF is the slow one.
func regenerationTree(rootID uint64, start time.Time) []calls.Call {
	base := []symbols.Frame{
		frame("github.com/cilium/cilium/pkg/endpoint.(*EndpointRegenerationEvent).Handle", "/go/src/github.com/cilium/cilium/pkg/endpoint/events.go", 60, 0x1500),
		frame("github.com/cilium/cilium/pkg/eventqueue.(*EventQueue).run.func1", "/go/src/github.com/cilium/cilium/pkg/eventqueue/eventqueue.go", 260, 0x1600),
		frame("runtime.goexit", "/usr/local/go/src/runtime/asm_amd64.s", 1700, 0x1700),
	}
	regen := frame(fnRegenerate, "/go/src/github.com/cilium/cilium/pkg/endpoint/policy.go", 501, 0x1000)
	regenAt := frame(fnRegenerate, "/go/src/github.com/cilium/cilium/pkg/endpoint/policy.go", 612, 0x1080)
	bpf := frame(fnRegenerateBPF, "/go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go", 588, 0x2000)
	bpfAt := frame(fnRegenerateBPF, "/go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go", 700, 0x2040)
	// syncPolicyMap is called through an inlined helper.
	helper := frame("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMap", "/go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go", 1300, 0x2040)
	helper.Inlined = true
	sync := frame(fnSyncPolicyMap, "/go/src/github.com/cilium/cilium/pkg/endpoint/bpf.go", 1400, 0x3000)

	stack := func(fs ...symbols.Frame) []symbols.Frame {
		return append(fs, base...)
	}
	mk := func(id, parent uint64, fn string, off, dur time.Duration, st []symbols.Frame) calls.Call {
		return calls.Call{
			Func: fn, ID: id, ParentID: parent, RootID: rootID,
			PID: 4242, Goroutine: 77,
			Start: start.Add(off), Duration: dur,
			Stack: st, SampleRate: 1, MinDuration: time.Microsecond,
			Attrs: []calls.Attr{{Key: "endpoint.id", Value: "1234"}},
		}
	}
	return []calls.Call{
		mk(rootID+2, rootID+1, fnSyncPolicyMap, 3*time.Millisecond, 2*time.Millisecond, stack(sync, helper, bpfAt, regenAt)),
		mk(rootID+1, rootID, fnRegenerateBPF, 2*time.Millisecond, 40*time.Millisecond, stack(bpf, regenAt)),
		mk(rootID, 0, fnRegenerate, 0, 50*time.Millisecond, stack(regen)),
	}
}

// randomTree returns n calls nested at random on one goroutine, in the order
// they finish.
func randomTree(r *rand.Rand, rootID uint64, n int) []calls.Call {
	var out []calls.Call
	nextID := rootID
	var grow func(parent uint64, start time.Time, dur time.Duration, depth int, budget *int)
	grow = func(parent uint64, start time.Time, dur time.Duration, depth int, budget *int) {
		id := nextID
		nextID++
		*budget--
		c := calls.Call{
			Func: fnResolve, ID: id, ParentID: parent, RootID: rootID, Goroutine: 9,
			Start: start, Duration: dur,
		}
		// Children take disjoint slices of the parent's time.
		at := start
		end := start.Add(dur)
		for *budget > 0 && depth < 6 && r.IntN(3) > 0 {
			gap := time.Duration(r.Int64N(int64(end.Sub(at))/4 + 1))
			at = at.Add(gap)
			left := end.Sub(at)
			if left <= 0 {
				break
			}
			d := time.Duration(r.Int64N(int64(left)/2 + 1))
			grow(id, at, d, depth+1, budget)
			at = at.Add(d)
		}
		out = append(out, c)
	}
	for n > 0 {
		grow(0, testT0.Add(time.Duration(nextID)*time.Second), time.Duration(1+r.Int64N(int64(time.Second))), 0, &n)
		rootID = nextID
	}
	return out
}
