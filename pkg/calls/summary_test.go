package calls

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// Percentiles by nearest rank: the duration at rank ceil(q*n) of n sorted
// durations, 1 ms .. n ms here.
func TestPercentileNearestRank(t *testing.T) {
	for _, tc := range []struct {
		n             int
		p50, p90, p99 int
	}{
		{1, 1, 1, 1},
		{4, 2, 4, 4},
		{99, 50, 90, 99},
		{100, 50, 90, 99},
		{1000, 500, 900, 990},
	} {
		var s Summary
		// Added largest first: the order of arrival does not matter.
		for i := tc.n; i >= 1; i-- {
			s.Add(&Call{Func: "f", Duration: time.Duration(i) * time.Millisecond})
		}
		f := s.Func("f")
		for _, p := range []struct {
			q    float64
			want int
		}{{0.5, tc.p50}, {0.9, tc.p90}, {0.99, tc.p99}, {0, 1}, {1, tc.n}} {
			if got, want := f.Percentile(p.q), time.Duration(p.want)*time.Millisecond; got != want {
				t.Errorf("n=%d: percentile %v = %v, want %v", tc.n, p.q, got, want)
			}
		}
	}
	if got := (&FuncStats{}).Percentile(0.5); got != 0 {
		t.Errorf("percentile of no calls = %v, want 0", got)
	}
}

// Untracked calls have their own column, apart from the dropped ones, and
// a legend says why they were not followed.
func TestPrintUntracked(t *testing.T) {
	var s Summary
	s.Add(&Call{Func: "deep", Duration: time.Millisecond})
	s.Add(&Call{Func: "deep", Duration: time.Millisecond, Error: &Error{Type: "*errors.errorString", Message: "x"}})
	s.Add(&Call{Func: "deep", Unfinished: true})
	var b strings.Builder
	if err := s.Print(&b, map[string]Dropped{"deep": {Dropped: 3, Untracked: 44, Skipped: 5, Filtered: 6}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header, one row and two legend lines:\n%s", b.String())
	}
	header := regexp.MustCompile(`\s\s+`).Split(strings.TrimSpace(lines[0]), -1)
	row := strings.Fields(lines[1])
	want := map[string]string{"calls": "2", "errors": "1", "unfinished": "1", "dropped": "3", "untracked": "44", "not sampled": "5", "filtered": "6", "function": "deep"}
	if len(header) != len(row) {
		t.Fatalf("header %q, row %q", header, row)
	}
	for i, h := range header {
		if w, ok := want[h]; ok && row[i] != w {
			t.Errorf("column %q = %s, want %s", h, row[i], w)
		}
		delete(want, h)
	}
	if len(want) != 0 {
		t.Errorf("columns %v missing from header %q", want, header)
	}
	if !strings.HasPrefix(lines[2], "dropped: ") || !strings.HasPrefix(lines[3], "untracked: ") || !strings.Contains(lines[3], "in flight") {
		t.Errorf("legend:\n%s", strings.Join(lines[2:], "\n"))
	}

	b.Reset()
	s.Print(&b, nil)
	if strings.Contains(b.String(), "untracked: ") || strings.Contains(b.String(), "dropped: ") {
		t.Errorf("legend printed with nothing dropped or untracked:\n%s", b.String())
	}
}

// Calls recorded without their stack and values are counted in one line
// under the table, and not at all when there are none.
func TestPrintContended(t *testing.T) {
	var s Summary
	s.Add(&Call{Func: "f", Duration: time.Millisecond})
	var b strings.Builder
	if err := s.Print(&b, map[string]Dropped{"f": {Contended: 2}, "g": {Contended: 1}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\n3 calls were traced without their stack and captured values") {
		t.Errorf("no contended line with the total:\n%s", b.String())
	}
	b.Reset()
	s.Print(&b, map[string]Dropped{"f": {}})
	if strings.Contains(b.String(), "without their stack") {
		t.Errorf("contended line with nothing contended:\n%s", b.String())
	}
}

// With broken-down calls the summary has their shares per function: of
// the summed time of those calls, on CPU, runnable, in system calls and
// blocked for any reason; "-" for a function without a breakdown.
func TestPrintBreakdownShares(t *testing.T) {
	var s Summary
	for range 2 {
		s.Add(&Call{Func: "slow", Duration: 100 * time.Millisecond, Breakdown: &Breakdown{
			Samples: 100, CPU: 20 * time.Millisecond, Runnable: 10 * time.Millisecond, Syscall: 30 * time.Millisecond,
			Blocked: map[string]time.Duration{"mutex": 25 * time.Millisecond, "chan receive": 15 * time.Millisecond},
		}})
	}
	s.Add(&Call{Func: "plain", Duration: time.Millisecond})
	var b strings.Builder
	if err := s.Print(&b, nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	header := regexp.MustCompile(`\s\s+`).Split(strings.TrimSpace(lines[0]), -1)
	for i, want := range []map[string]string{
		{"function": "slow", "cpu": "20%", "runnable": "10%", "syscall": "30%", "blocked": "40%"},
		{"function": "plain", "cpu": "-", "runnable": "-", "syscall": "-", "blocked": "-"},
	} {
		row := strings.Fields(lines[i+1])
		if len(row) != len(header) {
			t.Fatalf("header %q, row %q", header, row)
		}
		for j, h := range header {
			if w, ok := want[h]; ok && row[j] != w {
				t.Errorf("%s: %s %s, want %s", want["function"], h, row[j], w)
			}
		}
	}
}
