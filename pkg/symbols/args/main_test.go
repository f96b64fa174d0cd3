package args

import (
	"os"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// The stand-in agents the tests build are removed at the end.
func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}
