// Package kernel probes the running kernel for what the tracer's BPF
// programs depend on, one named check per dependency with the first Linux
// release that has it, and chooses from the results how the probes run.
package kernel
