package ciliumlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// Endpoint is what cilium-dbg endpoint list says of one endpoint.
type Endpoint struct {
	ID     uint16 `json:"id"`
	Status struct {
		State    string `json:"state"`
		Identity struct {
			ID     int      `json:"id"`
			Labels []string `json:"labels"`
		} `json:"identity"`
		External struct {
			Container string `json:"container-id"`
		} `json:"external-identifiers"`
	} `json:"status"`
	State string `json:"-"`
}

// Host is true for the host endpoint.
func (e Endpoint) Host() bool { return slices.Contains(e.Status.Identity.Labels, "reserved:host") }

// Health is true for the health endpoint.
func (e Endpoint) Health() bool { return slices.Contains(e.Status.Identity.Labels, "reserved:health") }

// Container is the CNI container ID of a pod's endpoint.
func (e Endpoint) Container() string { return e.Status.External.Container }

// Endpoints lists the agent's endpoints.
// It asks the agent's REST API, as cilium-dbg endpoint list does, but
// without starting a 135 MB client every poll: WaitQuiet polls while
// regenerations run, and every CPU it takes from them lengthens what is
// measured.
func (l *Lab) Endpoints(ctx context.Context) ([]Endpoint, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", fmt.Sprintf("/proc/%d/root/run/cilium/cilium.sock", l.initPID))
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cilium/v1/endpoint", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cilium API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cilium API GET /v1/endpoint: %s", resp.Status)
	}
	var eps []Endpoint
	if err := json.NewDecoder(resp.Body).Decode(&eps); err != nil {
		return nil, fmt.Errorf("cilium API GET /v1/endpoint: %w", err)
	}
	for i := range eps {
		eps[i].State = eps[i].Status.State
	}
	return eps, nil
}

// Metrics is the part of the agent's Prometheus metrics the tests compare
// against: cilium's own count and time of endpoint regenerations.
type Metrics struct {
	Regenerations map[string]float64 // cilium_endpoint_regenerations_total by outcome
	// cilium_endpoint_regeneration_time_stats_seconds{scope="total"}: sum
	// and count over every status.
	TotalSeconds float64
	TotalCount   float64
}

// Completed is the number of regenerations that ended, whatever the outcome.
func (m Metrics) Completed() int {
	var n float64
	for _, v := range m.Regenerations {
		n += v
	}
	return int(n)
}

// Metrics scrapes the agent's Prometheus endpoint, which listens on
// loopback inside the lab's network namespace.
func (l *Lab) Metrics(ctx context.Context) (Metrics, error) {
	body, err := l.Get(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return Metrics{}, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(body)
	body.Close()
	if err != nil {
		return Metrics{}, fmt.Errorf("agent metrics: %w", err)
	}
	m := Metrics{Regenerations: map[string]float64{}}
	if f := fams["cilium_endpoint_regenerations_total"]; f != nil {
		for _, s := range f.Metric {
			for _, lp := range s.Label {
				if lp.GetName() == "outcome" {
					m.Regenerations[lp.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	if f := fams["cilium_endpoint_regeneration_time_stats_seconds"]; f != nil {
		for _, s := range f.Metric {
			for _, lp := range s.Label {
				if lp.GetName() == "scope" && lp.GetValue() == "total" {
					m.TotalSeconds += s.GetHistogram().GetSampleSum()
					m.TotalCount += float64(s.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return m, nil
}

// Get fetches url from inside the lab's network namespace.
func (l *Lab) Get(ctx context.Context, url string) (io.ReadCloser, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: l.DialContext}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// DialContext dials from inside the lab's network namespace: the socket is
// made on a thread that joined it, and keeps that namespace afterwards.
// The thread goes back to the host's namespace before it is released.
func (l *Lab) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	host, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer host.Close()
	lab, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", l.initPID))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer lab.Close()
	if err := unix.Setns(int(lab.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("join the lab's network namespace: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if unix.Setns(int(host.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	// Otherwise the thread stays locked and Go ends it with this
	// goroutine's caller: it never runs other code in the lab's namespace.
	return c, err
}

// Regenerate makes every pod's endpoint regenerate rounds times, by
// switching its Debug option, as an operator does with cilium-dbg endpoint
// config. The agent may coalesce requests that arrive while one is queued;
// the tests compare with what it counts, not with rounds.
func (l *Lab) Regenerate(ctx context.Context, rounds int) error {
	for range rounds {
		// Setting an option to the value it has changes nothing and
		// regenerates nothing: flip it every round.
		l.debug = !l.debug
		for _, p := range l.Pods {
			if _, err := l.Dbg(ctx, "endpoint", "config", strconv.Itoa(int(p.EndpointID)), "Debug="+strconv.FormatBool(l.debug)); err != nil {
				return err
			}
		}
	}
	return nil
}

// WaitQuiet waits until no regeneration is running or queued: every
// endpoint ready and cilium's regeneration count unchanged for two
// seconds. Counts compared across a quiet point are exact.
func (l *Lab) WaitQuiet(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Minute)
	last, stable := -1, 0
	for {
		m, err := l.Metrics(ctx)
		if err != nil {
			return err
		}
		eps, err := l.Endpoints(ctx)
		if err != nil {
			return err
		}
		ready := true
		for _, e := range eps {
			ready = ready && e.State == "ready"
		}
		if ready && m.Completed() == last {
			stable++
		} else {
			stable = 0
		}
		if stable >= 4 {
			return nil
		}
		last = m.Completed()
		if time.Now().After(deadline) {
			return fmt.Errorf("cilium-agent did not settle in 5 minutes (regenerations %d)", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
