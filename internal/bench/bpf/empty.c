//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Programs that do nothing: the baseline of the overhead benchmark. Attached
// like the tracer's (an entry site and every RET site, the probe ID as the
// attach cookie), they cost what the uprobe traps cost and nothing more.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe")
int empty_entry(void *ctx)
{
	return 0;
}

SEC("uprobe")
int empty_return(void *ctx)
{
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
