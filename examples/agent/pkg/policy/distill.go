package policy

import "github.com/cilium/cilium/pkg/identity"

// selectorPolicy is a policy resolved for a set of selectors, before it is
// distilled for one endpoint.
type selectorPolicy struct {
	Revision uint64
}

// DistillPolicy returns the policy of the endpoint with identity id.
//
//go:noinline
func (p *selectorPolicy) DistillPolicy(id identity.NumericIdentity) *EndpointPolicy {
	return &EndpointPolicy{Identity: id, Revision: p.Revision}
}

// cachedSelectorPolicy embeds *selectorPolicy as cilium's EndpointPolicy
// does: the compiler's wrapper (*cachedSelectorPolicy).DistillPolicy has no
// RET, it ends in a jump to (*selectorPolicy).DistillPolicy.
type cachedSelectorPolicy struct {
	*selectorPolicy
}

// Distiller is what callers see of a cached policy.
type Distiller interface {
	DistillPolicy(id identity.NumericIdentity) *EndpointPolicy
}

var distiller Distiller = &cachedSelectorPolicy{&selectorPolicy{}}

// The call through the interface keeps the wrapper in the binary.
func init() {
	distiller.DistillPolicy(identity.MinimalAllocationIdentity)
}
