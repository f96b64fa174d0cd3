package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium-tracer/tracer/pkg/calls"
	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/symbols"
)

// Hooks are told what Follow does. Every field may be nil.
type Hooks struct {
	// Call receives each call, on Follow's goroutine.
	Call func(*calls.Call)
	// Configure returns the configuration of the attach to p, if set;
	// FollowConfig.Config otherwise. A configuration that changes while
	// Follow runs (the daemon's reload) takes effect at the next attach.
	Configure func(p container.Process) (Config, error)
	// Attached is called when the probes are attached to a process;
	// restarted is false for the first one, and when Persist attaches to
	// the same process again.
	Attached func(s *Session, p container.Process, restarted bool)
	// Detached is called when a session ends, before Close: its counters
	// are still readable. err is why it ended (nil: ctx done).
	Detached func(s *Session, err error)
	// Waiting hears of each failed attempt to find the target, at first
	// (FollowConfig.Wait) or after it exited.
	Waiting func(attempt int, err error, wait time.Duration)
	// Failed hears of an attach that failed after the first one, which
	// FollowConfig.Persist does not let end Follow.
	Failed func(p container.Process, err error)
}

// FollowConfig configures Follow.
type FollowConfig struct {
	Config  // PID and Binary are taken from each resolved process unless Binary is set
	Target  container.Selector
	Backoff container.Backoff
	// Once ends Follow when the first target exits instead of waiting for
	// it to restart.
	Once bool
	// Wait waits for a target that is not running yet, with Backoff,
	// instead of failing; an ambiguous Target still fails.
	Wait bool
	// Persist keeps Follow going after errors past the first attach: a
	// read error attaches again after Backoff, and a failed attach waits
	// for the target's next restart rather than retrying against a
	// running agent.
	Persist bool
	// Jitter, if set, returns a wait before each attach after the first,
	// on top of Backoff, so a fleet whose targets restart together does
	// not attach all at once.
	Jitter func() time.Duration
	// EveryProcess traces every process that runs Binary, now and
	// later, instead of one target: the uprobes are on the file. With a
	// Target, Binary is a path inside the target's root (its container's
	// image), and the probes fire in every process running that file,
	// in any container sharing the image layer. The session lasts until
	// ctx is done.
	EveryProcess bool
}

// Follow traces the process cfg.Target designates until ctx is done. When
// the process exits, its calls still in flight are reported unfinished,
// and Follow waits for the target to come back (a restarted container, a
// new process of the same name), with jittered exponential backoff so a
// fleet-wide restart does not turn into a stampede, then attaches again.
// A restart running the same executable file keeps its symbol tables; a
// changed one is read anew.
func Follow(ctx context.Context, cfg FollowConfig, h Hooks) error {
	if cfg.EveryProcess {
		return everyProcess(ctx, cfg, h)
	}
	proc, err := find(ctx, cfg, h)
	if err != nil || ctx.Err() != nil {
		return err
	}
	emit := h.Call
	if emit == nil {
		emit = func(*calls.Call) {}
	}
	// The executable of the last process, open while waiting for the next.
	var (
		kept     *symbols.File
		keptProc container.Process
		last     container.Process
		attached bool
	)
	defer func() {
		if kept != nil {
			kept.Close()
		}
	}()
	for {
		sc := cfg.Config
		if h.Configure != nil {
			sc, err = h.Configure(proc)
		}
		var s *Session
		if err == nil {
			var f *symbols.File
			if kept != nil && sc.Binary == "" && proc.SameBinary(keptProc) {
				f = kept
			} else if kept != nil {
				kept.Close()
			}
			kept = nil
			sc.PID = proc.PID
			if sc.Binary == "" {
				sc.Binary = proc.Binary
			}
			s, err = start(sc, f)
		}
		if err != nil {
			if !attached || !cfg.Persist {
				return err
			}
			if h.Failed != nil {
				h.Failed(proc, err)
			}
			if proc, err = next(ctx, cfg, h, proc, true); err != nil {
				return nil // ctx is done
			}
			continue
		}
		restarted := attached && !proc.Same(last)
		attached, last = true, proc
		if h.Attached != nil {
			h.Attached(s, proc, restarted)
		}
		runErr := s.Run(ctx, emit)
		if h.Detached != nil {
			h.Detached(s, runErr)
		}
		var closeErr error
		kept, closeErr = s.release()
		keptProc = proc
		runErr = errors.Join(runErr, closeErr)
		exited := errors.Is(runErr, ErrTargetExited)
		if ctx.Err() != nil || exited && cfg.Once || !exited && !cfg.Persist {
			return runErr
		}
		if proc, err = next(ctx, cfg, h, proc, exited); err != nil {
			return nil // ctx is done
		}
	}
}

// everyProcess is Follow for FollowConfig.EveryProcess: one session on the
// file, with no target of its own.
func everyProcess(ctx context.Context, cfg FollowConfig, h Hooks) error {
	if cfg.Binary == "" {
		return errors.New("tracing every process that runs an executable needs its path")
	}
	var root container.Process
	if cfg.Target != (container.Selector{}) {
		var err error
		if root, err = find(ctx, cfg, h); err != nil || ctx.Err() != nil {
			return err
		}
		cfg.Binary = filepath.Join(fmt.Sprintf("/proc/%d/root", root.PID), cfg.Binary)
	}
	if err := checkExecutable(cfg.Binary); err != nil {
		return err
	}
	sc := cfg.Config
	if h.Configure != nil {
		var err error
		if sc, err = h.Configure(root); err != nil {
			return err
		}
	}
	sc.PID, sc.Binary = 0, cfg.Binary
	s, err := Start(sc)
	if err != nil {
		return err
	}
	if h.Attached != nil {
		h.Attached(s, root, false)
	}
	emit := h.Call
	if emit == nil {
		emit = func(*calls.Call) {}
	}
	runErr := s.Run(ctx, emit)
	if h.Detached != nil {
		h.Detached(s, runErr)
	}
	return errors.Join(runErr, s.Close())
}

// checkExecutable says in one line why path is no executable to trace.
func checkExecutable(path string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case st.IsDir():
		return fmt.Errorf("%s is a directory, not an executable", path)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// find resolves the target, waiting for it with backoff if cfg.Wait.
func find(ctx context.Context, cfg FollowConfig, h Hooks) (container.Process, error) {
	for attempt := 0; ; attempt++ {
		p, err := container.Resolve(ctx, cfg.Target)
		if err == nil || !cfg.Wait || errors.Is(err, container.ErrAmbiguous) {
			return p, err
		}
		wait := cfg.Backoff.Next(attempt)
		if h.Waiting != nil {
			h.Waiting(attempt, err, wait)
		}
		if !sleep(ctx, wait) {
			return container.Process{}, nil
		}
	}
}

// next returns the process to attach to after proc: once proc has exited,
// the target's next process; else proc itself, after a backoff. Either way
// it waits the jitter too. It fails only when ctx is done.
func next(ctx context.Context, cfg FollowConfig, h Hooks, proc container.Process, exited bool) (container.Process, error) {
	if exited {
		var err error
		proc, err = container.Watch(ctx, cfg.Target, proc, container.WatchOptions{Backoff: cfg.Backoff, OnRetry: h.Waiting})
		if err != nil {
			return proc, err
		}
	} else if !sleep(ctx, cfg.Backoff.Next(0)) {
		return proc, ctx.Err()
	}
	if cfg.Jitter != nil && !sleep(ctx, cfg.Jitter()) {
		return proc, ctx.Err()
	}
	return proc, nil
}

// sleep waits d or until ctx is done, and reports whether it waited it all.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
