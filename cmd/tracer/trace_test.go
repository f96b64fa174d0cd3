package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium-tracer/tracer/internal/testagent"
)

// A detach that outlasts the delay is announced, then its end with the time
// it took; a quicker one prints nothing.
func TestDetachProgress(t *testing.T) {
	var quick testagent.Buffer
	detachProgress(&quick, time.Hour)(2141)()
	if quick.String() != "" {
		t.Errorf("quick detach printed %q", quick.String())
	}

	var slow testagent.Buffer
	done := detachProgress(&slow, 0)(2141)
	for !strings.Contains(slow.String(), "\n") {
		time.Sleep(time.Millisecond)
	}
	done()
	if !regexp.MustCompile(`^tracer: detaching 2141 uprobes\.\.\.\ntracer: detached 2141 uprobes in [0-9]+\.[0-9]s\n$`).MatchString(slow.String()) {
		t.Errorf("slow detach printed %q", slow.String())
	}
}
