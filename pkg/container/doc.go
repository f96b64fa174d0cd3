// Package container finds the process to trace — by PID, by Docker container
// name or ID, or by scanning /proc for a process name — and the path of its
// executable as seen from the host through /proc/PID/root.
//
// [Resolve] picks one process, [List] every cilium-agent on the node, and
// [Watch] waits for a traced process to exit and finds its successor,
// retrying with jittered exponential [Backoff] so that a restart storm does
// not become a tight loop.
package container
