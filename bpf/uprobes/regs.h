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
#define GO_PC(ctx) ((ctx)->ip)

// At the first instruction the CALL has just pushed the return address.
#define GO_RETURN_ADDRESS_ON_STACK 1
static __always_inline __u64 GO_RETURN_ADDRESS(struct pt_regs *ctx)
{
	__u64 ra = 0;
	bpf_probe_read_user(&ra, sizeof(ra), (void *)ctx->sp);
	return ra;
}

// go_args copies the integer argument registers of Go's register ABI, in
// order: RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11. Indexing pt_regs by a
// runtime register number would be a variable-offset context access, which
// the verifier refuses.
static __always_inline void go_args(struct pt_regs *ctx, __u64 args[16])
{
	args[0] = ctx->ax;
	args[1] = ctx->bx;
	args[2] = ctx->cx;
	args[3] = ctx->di;
	args[4] = ctx->si;
	args[5] = ctx->r8;
	args[6] = ctx->r9;
	args[7] = ctx->r10;
	args[8] = ctx->r11;
	for (int i = 9; i < 16; i++)
		args[i] = 0;
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
#define GO_PC(ctx) ((ctx)->pc)
#define GO_RETURN_ADDRESS(ctx) ((ctx)->regs[30])
// The prologue saves LR at a frame-size dependent place: the entry cannot
// find it.
#define GO_RETURN_ADDRESS_ON_STACK 0

// go_args copies the integer argument registers of Go's register ABI:
// X0-X15 (see the amd64 version for why).
static __always_inline void go_args(struct pt_regs *ctx, __u64 args[16])
{
	for (int i = 0; i < 16; i++)
		args[i] = ctx->regs[i];
}

#else
#error "unsupported architecture: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif
