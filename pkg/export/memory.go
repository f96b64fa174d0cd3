package export

import "context"

// MemoryExporter keeps every span it is given, for tests and for tools that
// inspect traces in process.
type MemoryExporter struct {
	guard
	spans []Span
}

var _ Exporter = (*MemoryExporter)(nil)

// Export implements Exporter.
func (e *MemoryExporter) Export(_ context.Context, spans []Span) error {
	return e.export(func() error {
		e.spans = append(e.spans, spans...)
		return nil
	})
}

// Shutdown implements Exporter. The spans stay readable.
func (e *MemoryExporter) Shutdown(context.Context) error {
	return e.shutdown(func() error { return nil })
}

// Spans returns a copy of the spans exported so far, in export order.
func (e *MemoryExporter) Spans() []Span {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Span(nil), e.spans...)
}
