package syscalls

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The run counter counts both programs at each system call, whatever its
// process: n getppid(2) of this test, which the programs do not follow,
// add at least 2n. Other processes' system calls add to it too, but far
// fewer than n meanwhile: a counter of one program in two would fall short.
func TestSyscallRuns(t *testing.T) {
	const n = 200_000
	s, err := Attach(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		unix.Getppid()
	}
	after, err := s.Runs()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d runs over %d getppid: %d beyond 2 each", after-before, n, int64(after-before)-2*n)
	if after-before < 2*n {
		t.Errorf("%d runs over %d getppid, want at least %d", after-before, n, 2*n)
	}
}
