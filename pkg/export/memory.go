package export

import (
	"context"
	"sync"
)

// MemoryExporter keeps every span it is given, for tests and for tools that
// inspect traces in process.
type MemoryExporter struct {
	mu     sync.Mutex
	spans  []Span
	closed bool
}

var _ Exporter = (*MemoryExporter)(nil)

// Export implements Exporter.
func (e *MemoryExporter) Export(_ context.Context, spans []Span) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrShutdown
	}
	e.spans = append(e.spans, spans...)
	return nil
}

// Shutdown implements Exporter. The spans stay readable.
func (e *MemoryExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// Spans returns a copy of the spans exported so far, in export order.
func (e *MemoryExporter) Spans() []Span {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Span(nil), e.spans...)
}
