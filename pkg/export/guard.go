package export

import "sync"

// A guard gives every exporter the same Export/Shutdown contract: the two
// never run at once, Export after Shutdown returns ErrShutdown, and only the
// first Shutdown does anything. Its mutex also guards the state the
// exporter's own code touches inside them.
type guard struct {
	mu     sync.Mutex
	closed bool
}

// export runs f, or returns ErrShutdown once shut down.
func (g *guard) export(f func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrShutdown
	}
	return f()
}

// shutdown runs f on the first call and returns nil on later ones.
func (g *guard) shutdown(f func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	return f()
}
