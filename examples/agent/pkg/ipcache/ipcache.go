// Package ipcache maps IP addresses to security identities.
package ipcache

import (
	"net/netip"
	"sync"

	"github.com/cilium/cilium/pkg/groundtruth"
	"github.com/cilium/cilium/pkg/identity"
)

var upsertLockedCalls = groundtruth.New("github.com/cilium/cilium/pkg/ipcache.(*IPCache).upsertLocked")

// IPCache is the node's IP -> identity table.
type IPCache struct {
	mutex      sync.Mutex
	identities map[netip.Prefix]identity.NumericIdentity
}

// NewIPCache returns an empty cache.
func NewIPCache() *IPCache {
	return &IPCache{identities: make(map[netip.Prefix]identity.NumericIdentity)}
}

// Upsert maps prefix to id and reports whether the mapping changed.
func (ipc *IPCache) Upsert(prefix netip.Prefix, id identity.NumericIdentity) bool {
	ipc.mutex.Lock()
	defer ipc.mutex.Unlock()
	return ipc.upsertLocked(prefix, id)
}

// upsertLocked is cheap and called for every address of every endpoint on
// every regeneration: the hot function of the workload.
//
//go:noinline
func (ipc *IPCache) upsertLocked(prefix netip.Prefix, id identity.NumericIdentity) bool {
	upsertLockedCalls.Call()
	old, ok := ipc.identities[prefix]
	if ok && old == id {
		return false
	}
	ipc.identities[prefix] = id
	return true
}
