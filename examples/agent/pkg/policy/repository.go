// Package policy resolves the policy that applies to a security identity.
package policy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity"
)

var resolvePolicyLockedCalls = groundtruth.New("github.com/cilium/cilium/pkg/policy.(*Repository).resolvePolicyLocked")

// EndpointPolicy is the resolved policy of one endpoint.
type EndpointPolicy struct {
	Identity identity.NumericIdentity
	// Rules holds one allowed peer identity per resolved rule level.
	Rules []identity.NumericIdentity
	// Revision is the repository revision the policy was resolved at. It
	// is not the first field, so captures through the pointer need its
	// real offset.
	Revision uint64
}

// Repository holds the policy rules. Resolving walks Depth nested rule
// levels and sleeps LevelSleep in each, so the resolution at level k
// (counted from the innermost, starting at 1) lasts about k*LevelSleep.
type Repository struct {
	mutex      sync.RWMutex
	revision   atomic.Uint64
	Depth      int
	LevelSleep time.Duration
}

// NewRepository returns a repository whose resolutions nest depth levels.
func NewRepository(depth int, levelSleep time.Duration) *Repository {
	return &Repository{Depth: depth, LevelSleep: levelSleep}
}

// GetSelectorPolicy resolves the policy of id at a new repository revision.
// With Depth 0 it resolves nothing and returns an empty policy.
func (r *Repository) GetSelectorPolicy(id identity.NumericIdentity) *EndpointPolicy {
	r.mutex.RLock()
	defer r.mutex.RUnlock()
	rev := r.revision.Add(1)
	if r.Depth <= 0 {
		return &EndpointPolicy{Revision: rev, Identity: id}
	}
	seq := groundtruth.Next()
	p := r.resolvePolicyLocked(seq, id, r.Depth)
	groundtruth.Returned(seq)
	p.Revision = rev
	return p
}

// resolvePolicyLocked recurses depth levels deep; the caller holds r.mutex.
// It measures each of its calls, numbered seq.
//
//go:noinline
func (r *Repository) resolvePolicyLocked(seq uint64, id identity.NumericIdentity, depth int) *EndpointPolicy {
	resolvePolicyLockedCalls.Start(seq)
	time.Sleep(r.LevelSleep)
	var p *EndpointPolicy
	if depth > 1 {
		next := groundtruth.Next()
		p = r.resolvePolicyLocked(next, id, depth-1)
		groundtruth.Returned(next)
	} else {
		p = &EndpointPolicy{Identity: id, Rules: make([]identity.NumericIdentity, 0, r.Depth)}
	}
	p.Rules = append(p.Rules, identity.MinimalAllocationIdentity+identity.NumericIdentity(depth)*7+id%13)
	resolvePolicyLockedCalls.Stop(seq)
	return p
}
