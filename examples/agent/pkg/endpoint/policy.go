package endpoint

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity"
	"github.com/cilium/cilium/pkg/identity/cache"
)

var regenerateCalls = groundtruth.New("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate")

// ipcacheUpserts is how many ipcache upserts one regeneration makes: the
// endpoint's IPv4 and IPv6 address and two peer prefixes.
const ipcacheUpserts = 4

// regenerationContext carries the settings of one regeneration.
type regenerationContext struct {
	bpfSleep time.Duration
	// seq numbers the regenerations of the agent, from 1.
	seq uint64
	// bpfErr is what regenerateBPF returned.
	bpfErr error
}

// regenerations numbers the regenerations.
var regenerations atomic.Uint64

// Regenerate regenerates the endpoint and returns the policy revision now
// realized in its datapath.
func (e *Endpoint) Regenerate() uint64 {
	e.regenerate(&regenerationContext{bpfSleep: e.owner.BPFSleep, seq: regenerations.Add(1)})
	return e.PolicyRevision()
}

//go:noinline
func (e *Endpoint) regenerate(ctx *regenerationContext) {
	regenerateCalls.Call()
	// No defer: it would add a closure symbol matching regenerate*.
	e.mutex.Lock()
	e.SecurityIdentity = e.identityLabelsChanged()
	e.desiredPolicy = e.owner.Repository.GetSelectorPolicy(e.SecurityIdentity)
	peer := byte(e.SecurityIdentity)
	prefixes := [ipcacheUpserts]netip.Prefix{
		netip.PrefixFrom(e.IPv4, 32),
		netip.PrefixFrom(e.IPv6, 128),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, peer, 0}), 24),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, peer, 0}), 24),
	}
	for _, p := range prefixes {
		e.owner.IPCache.Upsert(p, e.SecurityIdentity)
	}

	e.realizeBPFState(ctx)
	if f := e.owner.BPFResult; f != nil {
		f(ctx.seq, e.policyRevision, ctx.bpfErr)
	}
	e.mutex.Unlock()
}

// realizeBPFState realizes the desired policy in the datapath and records
// its revision. It is small enough to be inlined into regenerate, so stacks
// taken in regenerateBPF show it as an inlined frame.
func (e *Endpoint) realizeBPFState(ctx *regenerationContext) {
	e.policyRevision, ctx.bpfErr = e.regenerateBPF(ctx)
}

// identityLabelsChanged recovers AllocateIdentity's panics: the endpoint
// keeps its previous identity and retries on the next regeneration.
//
//go:noinline
func (e *Endpoint) identityLabelsChanged() (id identity.NumericIdentity) {
	id = e.SecurityIdentity
	defer func() {
		if r := recover(); r != nil {
			// Only the allocator's simulated failure is expected here.
			if err, _ := r.(error); !errors.Is(err, cache.ErrKVStoreUnavailable) {
				panic(r)
			}
		}
	}()
	seq := groundtruth.Next()
	id, _ = e.owner.Allocator.AllocateIdentity(seq, e.labels)
	groundtruth.Returned(seq)
	return id
}
