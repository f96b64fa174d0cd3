// Package presets names the cilium-agent functions worth tracing for one
// concern (endpoint regeneration, policy, identities, the ipcache, the
// kvstore, the datapath) per cilium minor release, with the values worth
// capturing on each, and carries the offsets of those captures, and the
// result registers of the functions' errors, for every supported cilium
// release and architecture, computed from cilium's source
// (internal/presetgen), so a stripped release binary gets them without an
// unstripped twin. It reads which cilium release a binary is from its Go
// build information.
package presets
