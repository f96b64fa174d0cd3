// Command big links a large part of this module's dependency graph, giving
// the symbols benchmark a binary of realistic size (cilium-agent is 100+ MB)
// without downloading one. It is built, never run.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 10 {
		return
	}
	ctx := context.Background()
	var uses []any
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: os.Args[1:]})
	uses = append(uses, conn, err)
	spec, err := ebpf.LoadCollectionSpec(os.Args[2])
	uses = append(uses, spec, err)
	coll, err := ebpf.NewCollection(spec)
	uses = append(uses, coll, err)
	ex, err := link.OpenExecutable(os.Args[3])
	uses = append(uses, ex, err)
	kspec, err := btf.LoadKernelSpec()
	uses = append(uses, kspec, err)
	cli, err := client.New(client.FromEnv)
	uses = append(uses, cli, err)
	if cli != nil {
		c, err := cli.ContainerInspect(ctx, os.Args[5], client.ContainerInspectOptions{})
		uses = append(uses, c, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}))
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	cmd := &cobra.Command{Use: "big"}
	uses = append(uses, cmd.Execute())
	ge, err := otlptracegrpc.New(ctx)
	uses = append(uses, ge, err)
	he, err := otlptracehttp.New(ctx)
	uses = append(uses, he, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(ge), sdktrace.WithBatcher(he))
	uses = append(uses, tp)
	var v map[string]any
	uses = append(uses, yaml.Unmarshal([]byte(os.Args[6]), &v))
	gs := grpc.NewServer()
	uses = append(uses, gs, http.ListenAndServe(os.Args[7], nil))
	fmt.Println(uses...)
}
