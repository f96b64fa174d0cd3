// Package session wires the stages for one traced process: it opens the
// executable, resolves the functions, attaches the probes and turns their
// records into calls until it is stopped or the process exits.
package session
