package export

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
)

// A call whose goroutine is unknown (Goroutine 0: the target's goid offset
// was not found) shows "g=?" in text, and has no goroutine in JSON or in
// span attributes: never a number passed off as a goroutine ID.
func TestUnknownGoroutine(t *testing.T) {
	b := NewSpanBuilder(Resource{PID: 1})
	known := calls.Call{Func: fnResolve, ID: 1, RootID: 1, Goroutine: 77, Start: time.Unix(0, 0), Duration: time.Millisecond}
	unknown := known
	unknown.ID, unknown.RootID, unknown.Goroutine = 2, 2, 0
	spans := []Span{b.Build(known), b.Build(unknown)}

	var text bytes.Buffer
	if err := NewTextExporter(&text, false).Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], " g=77 ") || !strings.Contains(lines[1], " g=?  ") {
		t.Errorf("text:\n%s", text.String())
	}

	var js bytes.Buffer
	if err := NewJSONExporter(&js).Export(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&js)
	for i, want := range []any{float64(77), nil} {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m["goroutine"] != want {
			t.Errorf("JSON span %d: goroutine %v, want %v", i, m["goroutine"], want)
		}
	}

	for i, want := range []bool{true, false} {
		has := false
		for _, a := range spans[i].Attributes {
			has = has || a.Key == AttrGoroutine
		}
		if has != want {
			t.Errorf("span %d: goroutine.id attribute %v, want %v", i, has, want)
		}
	}
}
