package symbols

import (
	"os"
	"testing"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testagent.Cleanup()
	os.Exit(code)
}
