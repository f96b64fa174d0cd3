package symbols_test

import (
	"sync"
	"testing"

	"github.com/cilium-tracer/tracer/pkg/symbols"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
	"github.com/cilium-tracer/tracer/pkg/symbols/offsets"
)

// A File is shared by the goroutines of the tracer (resolution, stack
// symbolization); run with -race. The test is outside package symbols to
// use the packages built on it.
func TestConcurrentUse(t *testing.T) {
	for _, stripped := range []bool{false, true} {
		f := symtest.Open(t, symtest.FindTarget(t, "local", "amd64", true, stripped).Path, symbols.Open)
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, name := range []string{"main.recurse", "main.(*Endpoint).*", "fmt.Fprintf", "nope"} {
					fns, _ := f.Funcs(name)
					for _, fn := range fns {
						f.ReturnOffsets(fn)
						for pc := fn.Entry; pc < fn.End; pc += 3 {
							f.Frames(pc)
						}
					}
				}
				offsets.GoidOffset(f)
			}()
		}
		wg.Wait()
	}
}
