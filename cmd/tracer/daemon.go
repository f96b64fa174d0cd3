package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cilium-tracer/tracer/pkg/daemon"
)

type daemonFlags struct {
	config         string
	pid            int
	container      string
	process        string
	binary         string
	metricsListen  string
	budgetPercent  float64
	startJitter    time.Duration
	reattachJitter time.Duration
	logFormat      string
	debug          bool
}

func daemonCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "daemon --config FILE",
		Short: "Trace continuously under a CPU budget, export spans and serve metrics",
		Long: `Trace the configured functions of cilium-agent continuously: follow it
across restarts, keep the probes' cost under a CPU budget, export spans and
serve Prometheus metrics. Flags override the configuration file. SIGHUP
reloads the file; SIGTERM flushes the exporters and detaches.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML configuration file (required)")
	fl.IntVar(&f.pid, "pid", 0, "host PID of the target (overrides target.pid)")
	fl.StringVar(&f.container, "container", "", "Docker container name or ID of the target (overrides target.container)")
	fl.StringVar(&f.process, "process", "", "process name of the target (overrides target.process)")
	fl.StringVar(&f.binary, "binary", "", "executable to read symbols from (overrides target.binary)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "address of /metrics and /healthz, or none (overrides metrics.listen)")
	fl.Float64Var(&f.budgetPercent, "budget-percent", 0, "CPU budget of the probes, percent of one CPU (overrides governor.budget_percent)")
	fl.DurationVar(&f.startJitter, "start-jitter", 0, "random delay window before the first attach (overrides jitter.start)")
	fl.DurationVar(&f.reattachJitter, "reattach-jitter", 0, "random delay window before re-attaching to a restarted target (overrides jitter.reattach)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.BoolVar(&f.debug, "debug", false, "log debug messages")
	cmd.MarkFlagRequired("config")
	return cmd
}

// load reads the configuration file and applies the flags set on the
// command line.
func (f daemonFlags) load(fl *pflag.FlagSet) (daemon.Config, error) {
	cfg, err := daemon.Load(f.config)
	if err != nil {
		return cfg, err
	}
	t := &cfg.Target
	if fl.Changed("pid") || fl.Changed("container") || fl.Changed("process") {
		t.PID, t.Container, t.Process = f.pid, f.container, f.process
	}
	if fl.Changed("binary") {
		t.Binary = f.binary
	}
	if fl.Changed("metrics-listen") {
		cfg.Metrics.Listen = f.metricsListen
	}
	if fl.Changed("budget-percent") {
		cfg.Governor.BudgetPercent = f.budgetPercent
	}
	if fl.Changed("start-jitter") {
		cfg.Jitter.Start = f.startJitter
	}
	if fl.Changed("reattach-jitter") {
		cfg.Jitter.Reattach = f.reattachJitter
	}
	return cfg, cfg.Validate()
}

func runDaemon(ctx context.Context, cmd *cobra.Command, f daemonFlags) error {
	level := slog.LevelInfo
	if f.debug {
		level = slog.LevelDebug
	}
	var h slog.Handler
	switch f.logFormat {
	case "text":
		h = slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})
	case "json":
		h = slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})
	default:
		return errors.New("--log-format: want text or json")
	}
	log := slog.New(h)

	cfg, err := f.load(cmd.Flags())
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: log, Stdout: cmd.OutOrStdout()})
	if err != nil {
		return err
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			cfg, err := f.load(cmd.Flags())
			if err == nil {
				err = d.Reload(cfg)
			}
			if err != nil {
				log.Error("reload rejected, keeping the running configuration", "err", err)
				continue
			}
			log.Info("configuration reloaded", "file", f.config)
		}
	}()
	return d.Run(ctx)
}
