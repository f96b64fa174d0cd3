package main

import (
	"fmt"

	"github.com/cilium/cilium/pkg/endpoint"
	"github.com/cilium/cilium/pkg/version"
)

func main() {
	e := &endpoint.Endpoint{ID: 1}
	fmt.Println(version.Version(), e.K8sPodName, e.K8sNamespace)
	e.Regenerate()
}
