package container

import "testing"

func TestParseStat(t *testing.T) {
	line := "4242 (we(ird) na) me) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 123456 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.comm != "we(ird) na) me" || st.state != 'S' || st.startTime != 123456 {
		t.Errorf("parseStat = %+v", st)
	}
	for _, bad := range []string{"", "4242 no parens", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 notanumber"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParseNSPID(t *testing.T) {
	for _, tt := range []struct {
		status string
		want   int
		ok     bool
	}{
		{"Name:\tx\nNSpid:\t4242\n", 4242, true},
		{"Name:\tx\nNSpid:\t4242\t17\t1\n", 1, true},
		{"Name:\tx\n", 0, false},
		{"NSpid:\n", 0, false},
	} {
		got, ok := parseNSPID([]byte(tt.status))
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseNSPID(%q) = %d, %v", tt.status, got, ok)
		}
	}
}
