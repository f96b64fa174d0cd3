package syscalls

import "fmt"

// What the programs say a syscall did (see WHAT_NETLINK in syscalls.c): its
// number in the low 16 bits, above them 1 + the command of a bpf(2), or
// whatNetlink for a socket syscall on a netlink socket.
const (
	whatNetlink = 1 << 16
	nrBits      = 0xffff
)

// Name names what a syscall did: "read", "bpf BPF_PROG_LOAD", "netlink
// sendmsg".
func Name(what uint32) string {
	nr := what & nrBits
	name, ok := names[nr]
	if !ok {
		name = fmt.Sprintf("syscall %d", nr)
	}
	sub := what >> 16
	switch {
	case sub == 0:
		return name
	case name == "bpf":
		if cmd := int(sub - 1); cmd < len(bpfCmds) {
			return "bpf " + bpfCmds[cmd]
		}
		return fmt.Sprintf("bpf %d", sub-1)
	case what&^nrBits == whatNetlink:
		return "netlink " + name
	}
	return name
}

// bpfCmds are the bpf(2) commands, by number (enum bpf_cmd).
var bpfCmds = []string{
	"BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
	"BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET",
	"BPF_PROG_ATTACH", "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID",
	"BPF_MAP_GET_NEXT_ID", "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD",
	"BPF_PROG_QUERY", "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID",
	"BPF_TASK_FD_QUERY", "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID",
	"BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH", "BPF_MAP_DELETE_BATCH",
	"BPF_LINK_CREATE", "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID",
	"BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH", "BPF_PROG_BIND_MAP",
	"BPF_TOKEN_CREATE",
}
