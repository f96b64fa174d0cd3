// Package bpf holds the empty uprobe programs the overhead benchmark uses as
// its baseline.
package bpf

//go:generate go tool bpf2go -go-package bpf -target amd64,arm64 Empty empty.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
