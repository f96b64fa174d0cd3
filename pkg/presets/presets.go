package presets

import (
	"fmt"
	"slices"
	"strings"
)

//go:generate go run ../../internal/presetgen -o catalogue.go

// A Preset is a named set of functions to trace.
type Preset struct {
	Name        string
	Description string
	Funcs       []Func
}

// A Func is one function of a preset, named as the Go linker names it,
// with the values worth capturing at its entry.
type Func struct {
	Name string
	// Captures are NAME=EXPR in the form the DWARF resolver takes
	// (endpoint_id=e.ID); on a stripped binary the catalogue gives their
	// raw form for the binary's release.
	Captures []string
	// Minors are the cilium minor releases declaring it, e.g. "1.16";
	// nil: all of Minors.
	Minors []string
}

// Minors are the cilium minor releases the presets know, oldest first.
var Minors = []string{"1.16", "1.17", "1.18"}

// Newest is the minor release used for a binary of an unknown release.
func Newest() string { return Minors[len(Minors)-1] }

// For returns the preset's functions in a cilium minor release.
func (p *Preset) For(minor string) []Func {
	var fs []Func
	for _, f := range p.Funcs {
		if f.Minors == nil || slices.Contains(f.Minors, minor) {
			fs = append(fs, f)
		}
	}
	return fs
}

// An UnknownError reports a preset name that does not exist.
type UnknownError struct{ Name string }

func (e *UnknownError) Error() string {
	return fmt.Sprintf("unknown preset %q (presets: %s)", e.Name, strings.Join(Names(), ", "))
}

// Lookup returns the preset named name, or an *UnknownError listing the
// presets.
func Lookup(name string) (*Preset, error) {
	for i := range All {
		if All[i].Name == name {
			return &All[i], nil
		}
	}
	return nil, &UnknownError{Name: name}
}

// Names lists the presets in the order of All.
func Names() []string {
	names := make([]string, len(All))
	for i, p := range All {
		names[i] = p.Name
	}
	return names
}

// Packages of the functions, as the linker prefixes their names.
const (
	pkg        = "github.com/cilium/cilium/pkg/"
	endpoint   = pkg + "endpoint.(*Endpoint)."
	loader     = pkg + "datapath/loader."
	policy     = pkg + "policy."
	identities = pkg + "identity/cache.(*CachingIdentityAllocator)."
	allocator  = pkg + "allocator.(*Allocator)."
	idManager  = pkg + "identity/identitymanager.(*IdentityManager)."
	ipcache    = pkg + "ipcache.(*IPCache)."
	etcd       = pkg + "kvstore.(*etcdClient)."
	policyMap  = pkg + "maps/policymap.(*PolicyMap)."
	bpfMap     = pkg + "bpf.(*Map)."
)

// Captures shared by the functions of the Endpoint: which endpoint, and
// which pod it is.
var (
	epCaptures    = []string{"endpoint_id=e.ID", "pod=e.K8sPodName", "namespace=e.K8sNamespace"}
	epRevCaptures = append(slices.Clip(epCaptures), "policy_revision=e.policyRevision")
)

func since117(f Func) Func { f.Minors = []string{"1.17", "1.18"}; return f }
func only(minor string, f Func) Func {
	f.Minors = []string{minor}
	return f
}

// All are the presets, in the order `tracer presets` lists them.
var All = []Preset{{
	Name:        "endpoint-regeneration",
	Description: "endpoint regeneration: policy, BPF state, policy map syncs, datapath compile and load, per endpoint and pod",
	Funcs: []Func{
		{Name: endpoint + "regenerate", Captures: epRevCaptures},
		{Name: endpoint + "regeneratePolicy", Captures: epCaptures},
		{Name: endpoint + "regenerateBPF", Captures: epRevCaptures},
		{Name: endpoint + "realizeBPFState", Captures: epCaptures},
		{Name: endpoint + "runPreCompilationSteps", Captures: epCaptures},
		{Name: endpoint + "writeHeaderfile", Captures: epCaptures},
		{Name: endpoint + "updateRealizedState", Captures: []string{"endpoint_id=e.ID", "pod=e.K8sPodName", "namespace=e.K8sNamespace", "revision=revision"}},
		{Name: endpoint + "setPolicyRevision", Captures: []string{"endpoint_id=e.ID", "pod=e.K8sPodName", "namespace=e.K8sNamespace", "revision=rev"}},
		{Name: endpoint + "syncPolicyMap", Captures: epCaptures},
		{Name: endpoint + "syncPolicyMapWithDump", Captures: epCaptures},
		since117(Func{Name: endpoint + "syncPolicyMapWith", Captures: epCaptures}),
		since117(Func{Name: endpoint + "applyPolicyMapChangesLocked", Captures: epCaptures}),
		only("1.16", Func{Name: endpoint + "applyPolicyMapChanges", Captures: epCaptures}),
		{Name: loader + "(*loader).ReloadDatapath"},
		{Name: loader + "(*objectCache).fetchOrCompile"},
		{Name: loader + "compileDatapath", Captures: []string{"host=isHost"}},
		{Name: loader + "compile", Captures: []string{"output=prog.Output"}},
		since117(Func{Name: loader + "reloadEndpoint"}),
		only("1.16", Func{Name: loader + "(*loader).reloadDatapath"}),
	},
}, {
	Name:        "policy",
	Description: "policy: repository resolution and updates per identity, selector cache updates",
	Funcs: []Func{
		{Name: policy + "(*Repository).resolvePolicyLocked", Captures: []string{"identity=securityIdentity.ID"}},
		{Name: policy + "(*Repository).computePolicyEnforcementAndRules", Captures: []string{"identity=securityIdentity.ID"}},
		since117(Func{Name: policy + "(*Repository).GetSelectorPolicy", Captures: []string{"identity=id.ID", "endpoint_id=endpointID"}}),
		since117(Func{Name: policy + "(*policyCache).updateSelectorPolicy", Captures: []string{"identity=identity.ID", "endpoint_id=endpointID"}}),
		only("1.16", Func{Name: policy + "(*PolicyCache).updateSelectorPolicy", Captures: []string{"identity=identity.ID", "endpoint_id=endpointID"}}),
		{Name: policy + "(*selectorPolicy).DistillPolicy"},
		{Name: policy + "(*EndpointPolicy).ConsumeMapChanges"},
		since117(Func{Name: policy + "(*Repository).ReplaceByResource", Captures: []string{"resource=resource"}}),
		since117(Func{Name: policy + "(*Repository).ReplaceByLabels"}),
		only("1.16", Func{Name: policy + "(*Repository).ReplaceByResourceLocked", Captures: []string{"resource=resource"}}),
		only("1.16", Func{Name: policy + "(*Repository).AddListLocked"}),
		only("1.16", Func{Name: policy + "(*Repository).DeleteByLabelsLocked"}),
		{Name: policy + "(*SelectorCache).UpdateIdentities"},
		{Name: policy + "(*SelectorCache).AddIdentitySelector"},
		{Name: policy + "(*SelectorCache).AddFQDNSelector"},
		{Name: policy + "(*SelectorCache).RemoveSelector"},
	},
}, {
	Name:        "identity",
	Description: "identities: allocation and release (global through the kvstore or CRDs, and local), per endpoint",
	Funcs: []Func{
		{Name: identities + "AllocateIdentity", Captures: []string{"old_identity=oldNID"}},
		{Name: identities + "AllocateLocalIdentity", Captures: []string{"old_identity=oldNID"}},
		{Name: identities + "Release", Captures: []string{"identity=id.ID"}},
		{Name: allocator + "Allocate"},
		{Name: allocator + "lockedAllocate"},
		{Name: allocator + "Release"},
		{Name: idManager + "Add", Captures: []string{"identity=identity.ID"}},
		{Name: idManager + "Remove", Captures: []string{"identity=identity.ID"}},
		{Name: idManager + "RemoveOldAddNew", Captures: []string{"old_identity=old.ID", "new_identity=new.ID"}},
		{Name: endpoint + "SetIdentity", Captures: []string{"endpoint_id=e.ID", "pod=e.K8sPodName", "namespace=e.K8sNamespace", "identity=identity.ID"}},
		{Name: endpoint + "identityLabelsChanged", Captures: epCaptures},
	},
}, {
	Name:        "ipcache",
	Description: "ipcache: upserts and deletes per IP, metadata upserts and label injection",
	Funcs: []Func{
		{Name: ipcache + "Upsert", Captures: []string{"ip=ip"}},
		{Name: ipcache + "upsertLocked", Captures: []string{"ip=ip"}},
		{Name: ipcache + "Delete", Captures: []string{"ip=IP"}},
		{Name: ipcache + "deleteLocked", Captures: []string{"ip=ip"}},
		// In 1.18 the prefix takes 5 registers, and the resource is
		// passed on the stack on amd64.
		{Name: ipcache + "UpsertMetadata", Captures: []string{"resource=resource"}, Minors: []string{"1.16", "1.17"}},
		only("1.18", Func{Name: ipcache + "UpsertMetadata"}),
		{Name: ipcache + "RemoveMetadata", Captures: []string{"resource=resource"}},
		{Name: ipcache + "UpsertMetadataBatch"},
		{Name: ipcache + "RemoveMetadataBatch"},
		{Name: ipcache + "TriggerLabelInjection"},
		{Name: ipcache + "handleLabelInjection"},
		{Name: ipcache + "doInjectLabels"},
	},
}, {
	Name:        "kvstore",
	Description: "kvstore: etcd reads, writes, deletes and locks, per key",
	Funcs: []Func{
		{Name: etcd + "Get", Captures: []string{"key=key"}},
		{Name: etcd + "Update", Captures: []string{"key=key"}},
		{Name: etcd + "UpdateIfDifferent", Captures: []string{"key=key"}},
		{Name: etcd + "CreateOnly", Captures: []string{"key=key"}},
		{Name: etcd + "Delete", Captures: []string{"key=key"}},
		{Name: etcd + "DeletePrefix", Captures: []string{"prefix=path"}},
		{Name: etcd + "ListPrefix", Captures: []string{"prefix=prefix"}},
		{Name: etcd + "LockPath", Captures: []string{"path=path"}},
		{Name: pkg + "kvstore.LockPath", Captures: []string{"path=path"}},
	},
}, {
	Name:        "datapath",
	Description: "datapath: loader (compile, load, attach) and BPF map writes, per map",
	Funcs: []Func{
		{Name: loader + "(*loader).Reinitialize"},
		{Name: loader + "(*loader).ReloadDatapath"},
		{Name: loader + "(*loader).Unload"},
		{Name: loader + "compileDatapath", Captures: []string{"host=isHost"}},
		since117(Func{Name: loader + "reloadHostEndpoint"}),
		only("1.16", Func{Name: loader + "(*loader).reloadHostDatapath"}),
		{Name: loader + "attachSKBProgram", Captures: []string{"program=progName"}},
		{Name: bpfMap + "Update", Captures: []string{"map=m.name"}},
		{Name: bpfMap + "Delete", Captures: []string{"map=m.name"}},
		only("1.18", Func{Name: policyMap + "Update", Captures: []string{"map=pm.Map.name", "endpoint_id=pm.epID"}}),
		{Name: policyMap + "AllowKey", Captures: []string{"map=pm.Map.name"}, Minors: []string{"1.16", "1.17"}},
		{Name: policyMap + "DenyKey", Captures: []string{"map=pm.Map.name"}, Minors: []string{"1.16", "1.17"}},
		{Name: policyMap + "DeleteKey", Captures: []string{"map=pm.Map.name"}},
		{Name: pkg + "maps/lxcmap.WriteEndpoint"},
		{Name: pkg + "maps/lxcmap.DeleteEntry"},
	},
}}
