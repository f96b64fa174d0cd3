package endpoint

// sysBPF is bpf(2), which package syscall has no constant for.
const sysBPF = 280
