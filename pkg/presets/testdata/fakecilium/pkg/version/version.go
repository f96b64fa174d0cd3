package version

// ciliumVersion is set as cilium's Makefile sets it:
// -X "github.com/cilium/cilium/pkg/version.ciliumVersion=1.18.5 <commit> <date>".
var ciliumVersion string

func Version() string { return ciliumVersion }
