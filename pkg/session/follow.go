package session

import (
	"context"
	"errors"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
)

// Hooks are told what Follow does. Every field may be nil.
type Hooks struct {
	// Call receives each call, on Follow's goroutine.
	Call func(*calls.Call)
	// Attached is called when the probes are attached to a process;
	// restarted is false for the first one.
	Attached func(s *Session, p container.Process, restarted bool)
	// Detached is called when a session ends, before Close: its counters
	// are still readable. err is why it ended (nil: ctx done).
	Detached func(s *Session, err error)
	// Waiting hears of each failed attempt to find the restarted target.
	Waiting func(attempt int, err error, wait time.Duration)
}

// FollowConfig configures Follow.
type FollowConfig struct {
	Config  // PID and Binary are taken from each resolved process unless Binary is set
	Target  container.Selector
	Backoff container.Backoff
	// Once ends Follow when the first target exits instead of waiting for
	// it to restart.
	Once bool
}

// Follow traces the process cfg.Target designates until ctx is done. When
// the process exits, its calls still in flight are reported unfinished,
// and Follow waits for the target to come back (a restarted container, a
// new process of the same name), with jittered exponential backoff so a
// fleet-wide restart does not turn into a stampede, then attaches again.
// Symbols are read again for each process, so a changed binary is picked up.
func Follow(ctx context.Context, cfg FollowConfig, h Hooks) error {
	proc, err := container.Resolve(ctx, cfg.Target)
	if err != nil {
		return err
	}
	emit := h.Call
	if emit == nil {
		emit = func(*calls.Call) {}
	}
	for restarted := false; ; restarted = true {
		sc := cfg.Config
		sc.PID = proc.PID
		if sc.Binary == "" {
			sc.Binary = proc.Binary
		}
		s, err := Start(sc)
		if err != nil {
			return err
		}
		if h.Attached != nil {
			h.Attached(s, proc, restarted)
		}
		runErr := s.Run(ctx, emit)
		if h.Detached != nil {
			h.Detached(s, runErr)
		}
		s.Close()
		if !errors.Is(runErr, ErrTargetExited) || cfg.Once {
			return runErr
		}
		proc, err = container.Watch(ctx, cfg.Target, proc, container.WatchOptions{Backoff: cfg.Backoff, OnRetry: h.Waiting})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
