// Package ciliumlab builds a real cilium-agent from its Go module and runs it
// without Kubernetes, in namespaces of its own, with etcd and pods made by
// the real CNI plugin, for the end-to-end tests, `make demo-cilium` and
// `make bench`. It also reads the agent's own ground truth: its Prometheus
// metrics and its log of completed regenerations.
//
// Nothing of the host is touched: the lab has its own network, mount, PID
// and cgroup namespaces, and Close checks that no process, cgroup or
// changed sysctl is left.
package ciliumlab
