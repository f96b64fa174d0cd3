// Package endpoint manages the endpoints (pods) of the node and their
// regeneration: resolving policy, allocating identity, updating the ipcache
// and reloading the datapath.
package endpoint

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/cilium/pkg/datapath/loader"
	"github.com/cilium/cilium/pkg/identity"
	"github.com/cilium/cilium/pkg/identity/cache"
	"github.com/cilium/cilium/pkg/ipcache"
	"github.com/cilium/cilium/pkg/maps/policymap"
	"github.com/cilium/cilium/pkg/policy"
)

// Owner holds the node-wide subsystems every regeneration goes through.
type Owner struct {
	Repository *policy.Repository
	IPCache    *ipcache.IPCache
	Allocator  *cache.CachingIdentityAllocator
	Loader     loader.Loader
	// BPFSleep is how long regenerateBPF sleeps besides its children.
	BPFSleep time.Duration
	// FailEvery makes every FailEvery-th call of regenerateBPF return an
	// error (0: none).
	FailEvery uint64
	// BPFResult, if set, hears what each call of regenerateBPF returned,
	// with its regeneration's number.
	BPFResult func(seq, revnum uint64, err error)
}

// Endpoint is one pod's network endpoint. ID is deliberately not the first
// field, as in the real agent, so field captures need real offsets.
type Endpoint struct {
	mutex sync.Mutex
	owner *Owner

	// ID is the endpoint's node-local number.
	ID               uint16
	K8sPodName       string
	K8sNamespace     string
	SecurityIdentity identity.NumericIdentity
	IPv4             netip.Addr
	IPv6             netip.Addr

	labels []string
	// policyRevision is the revision of the last policy realized in the
	// datapath; it is updated after regenerateBPF returns.
	policyRevision uint64
	// desiredPolicy is the policy being realized; it is set before
	// regenerateBPF is called.
	desiredPolicy *policy.EndpointPolicy
	policyMap     *policymap.PolicyMap
}

// New returns endpoint id of pod namespace/podName.
func New(owner *Owner, id uint16, namespace, podName string) *Endpoint {
	return &Endpoint{
		owner:            owner,
		ID:               id,
		K8sPodName:       podName,
		K8sNamespace:     namespace,
		SecurityIdentity: identity.ReservedInit,
		IPv4:             netip.AddrFrom4([4]byte{10, 0, byte(id >> 8), byte(id)}),
		IPv6:             netip.AddrFrom16([16]byte{0xf0, 0x0d, 14: byte(id >> 8), 15: byte(id)}),
		labels: []string{
			"k8s:io.kubernetes.pod.namespace=" + namespace,
			fmt.Sprintf("k8s:app=app-%d", id%5),
		},
		policyMap: &policymap.PolicyMap{},
	}
}

// PolicyRevision returns the revision of the last realized policy.
func (e *Endpoint) PolicyRevision() uint64 {
	e.mutex.Lock()
	defer e.mutex.Unlock()
	return e.policyRevision
}
