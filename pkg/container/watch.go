package container

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// exitPoll is how often WaitExit checks a process it cannot hold a pidfd
// for, and how often it looks at ctx while holding one.
const exitPoll = 100 * time.Millisecond

// WaitExit blocks until p has exited (or its PID belongs to another
// process) or ctx is done. It returns nil once p is gone.
func WaitExit(ctx context.Context, p Process) error {
	if !alive(p) {
		return nil
	}
	// A pidfd (Linux 5.3+) becomes readable the moment the process exits;
	// without one, poll /proc.
	fd, err := unix.PidfdOpen(p.PID, 0)
	havePidfd := err == nil
	if havePidfd {
		defer unix.Close(fd)
		// The PID may have been reused between alive and PidfdOpen.
		if !alive(p) {
			return nil
		}
	}
	for {
		if havePidfd {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(exitPoll/time.Millisecond))
			if err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("wait for pid %d: %w", p.PID, err)
			}
			if n > 0 {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		t := time.NewTimer(exitPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if !alive(p) {
			return nil
		}
	}
}

func alive(p Process) bool {
	st, err := readStat(p.PID)
	return err == nil && st.startTime == p.StartTime
}

// WatchOptions configures Watch.
type WatchOptions struct {
	Backoff Backoff
	// OnRetry, when set, hears of each attempt that did not find a new
	// process, with the wait before the next one: a session can say what it
	// is waiting for.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// Watch waits until current exits, then resolves sel again, waiting
// opts.Backoff between attempts, until it finds a process other than
// current; it gives up only when ctx is done. A PID selector cannot follow
// a restart, so it follows current's Docker container if it has one and
// current's process name otherwise.
func Watch(ctx context.Context, sel Selector, current Process, opts WatchOptions) (Process, error) {
	if err := WaitExit(ctx, current); err != nil {
		return Process{}, err
	}
	if sel.PID != 0 {
		sel = Selector{Process: current.Comm}
		// The name also follows a container recreated under it (compose).
		if ref := cmp.Or(current.ContainerName, current.ContainerID); current.Runtime == RuntimeDocker && ref != "" {
			sel = Selector{Container: ref}
		}
	}
	wait := opts.Backoff.Next(0)
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Process{}, ctx.Err()
		case <-t.C:
		}
		p, err := Resolve(ctx, sel)
		if ctx.Err() != nil {
			return Process{}, ctx.Err()
		}
		if err == nil {
			if !p.Same(current) {
				return p, nil
			}
			err = fmt.Errorf("pid %d: still the old process", p.PID)
		}
		wait = opts.Backoff.Next(attempt + 1)
		if opts.OnRetry != nil {
			opts.OnRetry(attempt, err, wait)
		}
	}
}
