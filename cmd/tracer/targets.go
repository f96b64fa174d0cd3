package main

import (
	"debug/buildinfo"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cilium-tracer/tracer/pkg/container"
	"github.com/cilium-tracer/tracer/pkg/presets"
)

func targetsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "targets",
		Short: "List the cilium-agent processes this node runs: what trace would attach to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := container.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, strings.Join(append(container.TargetColumns, "GO", "CILIUM"), "\t"))
			for _, p := range ps {
				goVersion, cilium := "-", "-"
				// The versions are a courtesy: a binary that cannot be
				// read is still a target worth listing.
				if bi, err := buildinfo.ReadFile(p.Binary); err == nil {
					goVersion = bi.GoVersion
					// As the presets read it: -ldflags, else a
					// tagged main module.
					if r, _ := presets.ReleaseOf(bi); r != "" {
						cilium = r
					}
				}
				fmt.Fprintln(tw, strings.Join(append(p.TargetRow(), goVersion, cilium), "\t"))
			}
			return tw.Flush()
		},
	}
}
