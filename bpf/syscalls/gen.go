package syscalls

//go:generate go tool bpf2go -go-package syscalls -target amd64,arm64 -type sc_event -type agg Syscalls syscalls.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
