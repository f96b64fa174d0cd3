package session

// HeldSyscalls returns how many calls' syscall events s holds until their
// records, and how many children reported running whose exits it awaits.
func HeldSyscalls(s *Session) (calls, outlived int) {
	return len(s.pending), len(s.outlived)
}
