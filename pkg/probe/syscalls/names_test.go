package syscalls

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestName(t *testing.T) {
	for _, tc := range []struct {
		what uint32
		want string
	}{
		{unix.SYS_READ, "read"},
		{unix.SYS_BPF | (5+1)<<16, "bpf BPF_PROG_LOAD"},
		{unix.SYS_BPF | (2+1)<<16, "bpf BPF_MAP_UPDATE_ELEM"},
		{unix.SYS_BPF | (99+1)<<16, "bpf 99"},
		{unix.SYS_SENDMSG | whatNetlink, "netlink sendmsg"},
		{unix.SYS_RECVFROM | whatNetlink, "netlink recvfrom"},
		{unix.SYS_SENDTO, "sendto"},
		{0xfff0, "syscall 65520"},
	} {
		if got := Name(tc.what); got != tc.want {
			t.Errorf("Name(%#x) = %q, want %q", tc.what, got, tc.want)
		}
	}
}
