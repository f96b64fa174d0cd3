// Package container finds the process to trace — by PID, by Docker container
// name or ID, or by scanning /proc for a process name — and the path of its
// executable as seen from the host through /proc/PID/root.
package container
