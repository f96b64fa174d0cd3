package symbols

import (
	"os"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
	"github.com/cilium-tracer/tracer/pkg/symbols/internal/symtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}

func openTarget(t testing.TB, tg *symtest.Target) *File {
	t.Helper()
	return symtest.Open(t, tg.Path, Open)
}
