package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// The committed catalogue is what the generator writes from the presets
// and cilium's sources now: a preset changed without `go generate
// ./pkg/presets` fails here.
func TestCatalogueUpToDate(t *testing.T) {
	cat, err := generate(context.Background(), releases)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cat.source()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("..", "..", "pkg", "presets", "catalogue.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pkg/presets/catalogue.go is stale: run go generate ./pkg/presets")
	}
}
