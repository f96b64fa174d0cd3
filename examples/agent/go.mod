module github.com/cilium/cilium

go 1.21
