// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The registers the probes read, per architecture, with the kernel's pt_regs
// layout written out so no architecture headers are needed.

#pragma once

#if defined(__TARGET_ARCH_x86)

struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

// Go's register ABI keeps the current g in R14.
#define GO_G(ctx) ((ctx)->r14)
#define GO_SP(ctx) ((ctx)->sp)

// At the first instruction the CALL has just pushed the return address.
static __always_inline __u64 GO_RETURN_ADDRESS(struct pt_regs *ctx)
{
	__u64 ra = 0;
	bpf_probe_read_user(&ra, sizeof(ra), (void *)ctx->sp);
	return ra;
}

#elif defined(__TARGET_ARCH_arm64)

struct pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};

// Go's register ABI keeps the current g in R28; BL leaves the return address
// in LR (R30).
#define GO_G(ctx) ((ctx)->regs[28])
#define GO_SP(ctx) ((ctx)->sp)
#define GO_RETURN_ADDRESS(ctx) ((ctx)->regs[30])

#else
#error "unsupported architecture: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif
