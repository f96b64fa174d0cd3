// A module named like cilium's, with its pkg/version variable: the tests
// build it with and without cilium's -X ldflag, and as a tagged checkout,
// to read the release back from the build information.
module github.com/cilium/cilium

go 1.24
