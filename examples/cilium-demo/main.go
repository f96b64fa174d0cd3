// Command cilium-demo shows the tracer on the real program: it builds
// cilium-agent from its Go module (once, cached), starts it without
// Kubernetes in namespaces of its own with etcd and three pods made by the
// real CNI plugin, traces a few endpoint regenerations with stacks and the
// endpoint ID on the stripped binary, as releases ship it, prints them and
// the summary, and tears everything down. `make demo-cilium` runs it as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium-tracer/tracer/internal/ciliumlab"
)

func main() {
	tracer := flag.String("tracer", "bin/tracer", "the tracer binary")
	version := flag.String("cilium", ciliumlab.Pinned, "cilium version to build and run")
	rounds := flag.Int("rounds", 2, "regenerations of each pod's endpoint")
	flag.Parse()
	if err := run(*tracer, *version, *rounds); err != nil {
		fmt.Fprintf(os.Stderr, "cilium-demo: %v\n", err)
		os.Exit(1)
	}
}

func run(tracer, version string, rounds int) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bins, err := ciliumlab.Build(ctx, version, os.Stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cilium-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// A stripped release binary has no DWARF: the endpoint ID's place in
	// the Endpoint struct comes from the unstripped build of the same code.
	offsets := filepath.Join(dir, "offsets.json")
	var funcs []string
	for _, f := range []string{"regenerate", "regeneratePolicy", "regenerateBPF"} {
		funcs = append(funcs, "--func", "github.com/cilium/cilium/pkg/endpoint.(*Endpoint)."+f)
	}
	args := append([]string{"offsets", "--binary", bins.Agent, "--capture", "endpoint_id=e.ID", "-o", offsets}, funcs...)
	if out, err := exec.CommandContext(ctx, tracer, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("tracer offsets: %v: %s", err, out)
	}
	lab, err := ciliumlab.Start(ctx, ciliumlab.Config{Binaries: bins, Stripped: true, Pods: 3, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()

	args = append([]string{"trace", "--pid", strconv.Itoa(lab.AgentPID()), "--stacks",
		"--capture", "endpoint_id=e.ID", "--offsets", offsets}, funcs...)
	cmd := exec.Command(tracer, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Its own process group: Ctrl-C reaches the demo, which stops the
	// tracer in order, so the summary is printed before teardown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(os.Interrupt)
	// The tracer prints "tracing ..." once attached; a second is ample
	// before the first regeneration is asked for, and the regenerations
	// it would miss are only the demo's.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(2 * time.Second):
	}
	fmt.Fprintf(os.Stderr, "cilium-demo: regenerating %d endpoints %d times (cilium-dbg endpoint config ID Debug=...)\n", len(lab.Pods), rounds)
	if err := lab.Regenerate(ctx, rounds); err != nil {
		return err
	}
	if err := lab.WaitQuiet(ctx); err != nil {
		return err
	}
	m, err := lab.Metrics(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "cilium-demo: cilium_endpoint_regenerations_total since the agent started: %v\n", m.Regenerations)
	return nil
}
