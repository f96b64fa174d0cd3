package syscalls

import "testing"

// The running kernel's sched_process_fork has one of the two layouts the
// programs know.
func TestForkLayout(t *testing.T) {
	dataloc, err := forkLayout()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dynamic comms: %v", dataloc)
}
