// Package kernels boots the tracer's core checks on the kernels cilium-agent
// runs on: Debian's cloud kernels, fetched as packages into a cache, booted
// under qemu (TCG) with an initramfs of busybox, the tracer, the stand-in
// agent and the project's own test binaries.
package kernels
