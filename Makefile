# The README's two commands: `make demo` and `make test`.

GO ?= go
BIN := bin
AGENT := $(BIN)/cilium-agent

.PHONY: build demo demo-cilium e2e-cilium test bench generate check-generate clean

build:
	$(GO) build -o $(BIN)/tracer ./cmd/tracer
	cd examples/agent && CGO_ENABLED=0 $(GO) build -o ../../$(AGENT) ./daemon

# Starts the example agent, traces regenerateBPF (and what it calls) for a
# few seconds with stacks, prints each call and the summary. Needs root.
demo: build
	@$(AGENT) -workers 4 -interval 200ms >/dev/null & agent=$$!; \
	trap 'kill $$agent 2>/dev/null' EXIT; \
	sleep 0.5; \
	$(BIN)/tracer trace --pid $$agent --duration 5s --stacks \
		--func 'github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate*' \
		--func 'github.com/cilium/cilium/pkg/endpoint.(*Endpoint).syncPolicyMapWithDump'

# The same on the real cilium-agent: builds it from its Go module once
# (about 15 minutes; cached under ~/.cache/tracer/cilium), runs it without
# Kubernetes in namespaces of its own with etcd and three CNI pods, traces a
# few regenerations with stacks and endpoint IDs, tears down. Needs root,
# clang-19/llvm-19, etcd, iproute2 and util-linux.
demo-cilium: build
	$(GO) run ./examples/cilium-demo -tracer $(BIN)/tracer

# The real-agent end-to-end tests alone (make test runs them too).
e2e-cilium:
	$(GO) test -count=1 -v -timeout 60m ./internal/ciliumlab

# Modules of their own beside the tracer's, so that building the tracer never
# downloads what only a fixture links (the Kubernetes API, compose-go, the
# Grafana SDK). layout_test.go fails if a go.mod is missing from this list.
MODULES := examples/agent examples/deploy examples/grafana internal/bench/big internal/bench/collector

# Runs every test: real uprobes, real Docker, real kernels. Needs root, a
# Docker engine, qemu-system-x86 and qemu-system-arm for the kernel matrix
# (internal/kernels boots Debian's kernels, fetched into
# ~/.cache/tracer/kernels), and qemu-user, under which pkg/goroutine runs
# its builds for the architecture the host is not.
test:
	# One package at a time. No test depends on it (they compare with the
	# agent's own clock and counts, so a loaded machine only slows them),
	# but on two cores packages side by side save no time.
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 60m ./...
	for m in $(MODULES); do \
		(cd $$m && $(GO) vet ./... && $(GO) test -count=1 -p 1 -timeout 60m ./...) || exit 1; \
	done

# Overhead side by side with bpftrace, pipeline throughput, attach cost;
# prints a table and rewrites BENCHMARKS.md. Needs root and bpftrace.
# BENCHFLAGS=-only=cilium (or overhead, pipeline, attach) runs one section
# and leaves BENCHMARKS.md alone. -only=budget, run only when named (about
# 15 minutes), measures the daemon's CPU budget on the real cilium-agent
# under a bursty workload.
bench:
	$(GO) run ./internal/bench $(BENCHFLAGS)

# Regenerates the BPF objects; needs clang, llvm and libbpf-dev.
generate:
	$(GO) generate ./bpf/... ./internal/bench/bpf/...

check-generate: generate
	git diff --exit-code -- bpf/ internal/bench/bpf/

clean:
	rm -rf $(BIN)
