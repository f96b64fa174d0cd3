package uprobes

//go:generate go tool bpf2go -go-package uprobes -target amd64,arm64 -type event -type probe_cfg -type counters -type entry_key -type capture_spec -type capture_vals -type ret_vals -type err_layout Uprobes uprobes.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror
//go:generate go tool bpf2go -go-package uprobes -target amd64,arm64 UprobesLegacy uprobes.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall -Werror -DLEGACY
