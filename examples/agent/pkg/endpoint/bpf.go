package endpoint

import (
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/maps/policymap"
)

var (
	regenerateBPFCalls         = groundtruth.New("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerateBPF")
	syncPolicyMapWithDumpCalls = groundtruth.New("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump")
)

// regenerateBPF sleeps ctx.bpfSleep, reloads the datapath (the loader's
// compileAndLoad runs meanwhile) and syncs the policy map. It returns the
// policy revision it realized.
//
//go:noinline
func (e *Endpoint) regenerateBPF(ctx *regenerationContext) (revnum uint64) {
	regenerateBPFCalls.Call()
	time.Sleep(ctx.bpfSleep)
	e.owner.Loader.ReloadDatapath(e.ID, e.desiredPolicy.Revision)
	e.syncPolicyMapWithDump()
	return e.desiredPolicy.Revision
}

// syncPolicyMapWithDump dumps the endpoint's policy map, compares it with
// the desired policy and rewrites it when they differ. It returns how many
// entries differed.
//
//go:noinline
func (e *Endpoint) syncPolicyMapWithDump() int {
	syncPolicyMapWithDumpCalls.Call()
	current := e.policyMap.Dump()
	desired := make([]policymap.PolicyEntry, len(e.desiredPolicy.Rules))
	for i, id := range e.desiredPolicy.Rules {
		desired[i] = policymap.PolicyEntry{Identity: id, Packets: uint64(e.ID)}
	}
	diff := len(desired) - len(current)
	if diff < 0 {
		diff = -diff
	}
	for i := 0; i < len(current) && i < len(desired); i++ {
		if current[i] != desired[i] {
			diff++
		}
	}
	if diff > 0 {
		e.policyMap.Update(desired)
	}
	return diff
}
