// Package cache allocates security identities for label sets.
package cache

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity"
)

var allocateIdentityCalls = groundtruth.New("github.com/cilium/cilium/pkg/identity/cache.(*CachingIdentityAllocator).AllocateIdentity")

// ErrKVStoreUnavailable is what AllocateIdentity panics with on every
// PanicEvery-th call, standing in for a backend failure nobody handled.
var ErrKVStoreUnavailable = errors.New("kvstore unavailable")

// CachingIdentityAllocator hands out one identity per distinct label set.
type CachingIdentityAllocator struct {
	// PanicEvery makes every PanicEvery-th call (counted over all
	// goroutines) panic; 0 never panics.
	PanicEvery uint64

	calls      atomic.Uint64
	mutex      sync.Mutex
	identities map[string]identity.NumericIdentity
}

// NewCachingIdentityAllocator returns an allocator that panics on every
// panicEvery-th call (never if 0).
func NewCachingIdentityAllocator(panicEvery uint64) *CachingIdentityAllocator {
	return &CachingIdentityAllocator{
		PanicEvery: panicEvery,
		identities: make(map[string]identity.NumericIdentity),
	}
}

// AllocateIdentity returns the identity of lbls, allocating it on first
// use; allocated reports whether it was new. It measures each of its calls
// that returns, numbered seq (from groundtruth.Next).
//
//go:noinline
func (m *CachingIdentityAllocator) AllocateIdentity(seq uint64, lbls []string) (id identity.NumericIdentity, allocated bool) {
	allocateIdentityCalls.Start(seq)
	if n := m.calls.Add(1); m.PanicEvery > 0 && n%m.PanicEvery == 0 {
		allocateIdentityCalls.PanicAt(seq)
		panic(ErrKVStoreUnavailable)
	}
	key := strings.Join(lbls, ";")
	m.mutex.Lock()
	id, ok := m.identities[key]
	if !ok {
		id = identity.MinimalAllocationIdentity + identity.NumericIdentity(len(m.identities))
		m.identities[key] = id
	}
	m.mutex.Unlock()
	allocateIdentityCalls.Stop(seq)
	return id, !ok
}
