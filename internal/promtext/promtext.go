package promtext

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
)

// Get reads the metrics page at url: each series, named as exposed (e.g.
// `tracer_exporter_spans_total{exporter="clickhouse",outcome="exported"}`),
// to its value.
func Get(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}
