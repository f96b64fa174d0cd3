package endpoint

// Endpoint has the fields the presets capture, not where cilium has them.
type Endpoint struct {
	ID             uint16
	K8sPodName     string
	K8sNamespace   string
	policyRevision uint64
}

//go:noinline
func (e *Endpoint) regenerateBPF() uint64 { return e.policyRevision }

func (e *Endpoint) Regenerate() { e.regenerateBPF() }
