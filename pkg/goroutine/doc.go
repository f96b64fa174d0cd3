// Package goroutine reads the state of a goroutine of a live Go process from
// its memory, with no probe in the target: runtime.g's status, wait reason,
// saved registers and stack bounds in one process_vm_readv of the struct's
// head, and where a parked goroutine waits, from a walk of its saved frame
// pointers symbolized through the executable's pclntab. The layouts and wait
// reasons per Go release come from package offsets.
package goroutine
