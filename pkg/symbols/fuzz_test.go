package symbols

import (
	"bytes"
	"os"
	"testing"
)

// FuzzNewFile feeds mutated Go executables through every parser. Panics are
// not caught during fuzzing: the bounds checks, not the recover, must hold.
//
// The seeds are megabytes, so minimizing each new input would stall the
// fuzzer, and Go 1.26's coordinator can end a duration-bounded run with a
// spurious "context deadline exceeded" (golang/go#75804). Run it with a
// count:
//
//	go test -run '^$' -fuzz FuzzNewFile -fuzztime 200000x -fuzzminimizetime 1x ./pkg/symbols
func FuzzNewFile(f *testing.F) {
	for _, tg := range []*target{
		findTarget(f, "local", "amd64", false, false),
		findTarget(f, "local", "amd64", false, true),
		findTarget(f, "local", "arm64", false, true),
		findTarget(f, "go1.21.13", "amd64", true, true),
	} {
		b, err := os.ReadFile(tg.path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	catchPanics = false
	f.Cleanup(func() { catchPanics = true })
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := NewFile(bytes.NewReader(data))
		if err != nil {
			return
		}
		file.GoidOffset()
		file.Funcs("main.(*Endpoint).regenerateBFP")
		fns, err := file.Funcs("main.*")
		if err != nil {
			return
		}
		for i, fn := range fns {
			if i == 20 {
				break
			}
			file.ReturnOffsets(fn)
			for pc := fn.Entry; pc < fn.End && pc < fn.Entry+256; pc += 5 {
				file.Frames(pc)
			}
		}
	})
}
