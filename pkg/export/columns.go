package export

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strconv"
	"time"
	"unsafe"

	"github.com/ClickHouse/ch-go/proto"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// ClickHouseColumns are the columns of TracesSchema.InsertStatement, filled
// a span at a time and sent as one native block. They are ch-go's typed
// columns, written without boxing a value: IDs are hex-encoded and numbers
// formatted straight into the string columns' buffers, and every
// LowCardinality column, the attribute keys included, builds its dictionary
// while rows are appended. Once the buffers have grown to a batch's size,
// appending a span allocates nothing.
type ClickHouseColumns struct {
	ts                                 proto.ColDateTime64
	traceID, spanID, parentID, state   strRefs
	name, kind, service                lowCardStr
	resAttrs                           attrMapCol
	scopeName, scopeVersion            strRefs
	spanAttrs                          attrMapCol
	duration                           proto.ColUInt64
	statusCode                         lowCardStr
	statusMessage                      strRefs
	evTS                               *proto.ColArr[time.Time]
	evName                             *proto.ColArr[string]
	evAttrs                            *proto.ColArr[map[string]string]
	linkTraceID, linkSpanID, linkState *proto.ColArr[string]
	linkAttrs                          *proto.ColArr[map[string]string]

	input proto.Input

	// resources are the resources met so far, rendered once each: a
	// resource is immutable, and a process's spans all share one.
	resources map[*resource.Resource]*renderedResource
	lastRes   *resource.Resource
	lastR     *renderedResource
}

// renderedResource is a resource's attributes as column values.
type renderedResource struct {
	keys, values []string
	service      string // service.name
}

// maxResources bounds the rendered resources kept; past it they are
// rendered again.
const maxResources = 1 << 10

// NewClickHouseColumns returns empty columns.
func NewClickHouseColumns() *ClickHouseColumns {
	strMap := func() *proto.ColMap[string, string] {
		return proto.NewMap[string, string](new(proto.ColStr).LowCardinality(), new(proto.ColStr))
	}
	c := &ClickHouseColumns{
		evTS:        proto.NewArray[time.Time](new(proto.ColDateTime64).WithPrecision(proto.PrecisionNano)),
		evName:      proto.NewArray[string](new(proto.ColStr).LowCardinality()),
		evAttrs:     proto.NewArray[map[string]string](strMap()),
		linkTraceID: proto.NewArray[string](new(proto.ColStr)),
		linkSpanID:  proto.NewArray[string](new(proto.ColStr)),
		linkState:   proto.NewArray[string](new(proto.ColStr)),
		linkAttrs:   proto.NewArray[map[string]string](strMap()),
		resources:   map[*resource.Resource]*renderedResource{},
	}
	c.ts.WithPrecision(proto.PrecisionNano)
	for _, lc := range []*lowCardStr{&c.name, &c.kind, &c.service, &c.statusCode, &c.resAttrs.keys, &c.spanAttrs.keys} {
		lc.init()
	}
	// In the order of InsertStatement's columns.
	c.input = proto.Input{
		{Name: "Timestamp", Data: &c.ts},
		{Name: "TraceId", Data: &c.traceID},
		{Name: "SpanId", Data: &c.spanID},
		{Name: "ParentSpanId", Data: &c.parentID},
		{Name: "TraceState", Data: &c.state},
		{Name: "SpanName", Data: &c.name},
		{Name: "SpanKind", Data: &c.kind},
		{Name: "ServiceName", Data: &c.service},
		{Name: "ResourceAttributes", Data: &c.resAttrs},
		{Name: "ScopeName", Data: &c.scopeName},
		{Name: "ScopeVersion", Data: &c.scopeVersion},
		{Name: "SpanAttributes", Data: &c.spanAttrs},
		{Name: "Duration", Data: &c.duration},
		{Name: "StatusCode", Data: &c.statusCode},
		{Name: "StatusMessage", Data: &c.statusMessage},
		{Name: "Events.Timestamp", Data: c.evTS},
		{Name: "Events.Name", Data: c.evName},
		{Name: "Events.Attributes", Data: c.evAttrs},
		{Name: "Links.TraceId", Data: c.linkTraceID},
		{Name: "Links.SpanId", Data: c.linkSpanID},
		{Name: "Links.TraceState", Data: c.linkState},
		{Name: "Links.Attributes", Data: c.linkAttrs},
	}
	return c
}

// Input returns the columns as a block's input. It stays valid across
// Reset.
func (c *ClickHouseColumns) Input() proto.Input { return c.input }

// Rows is the number of spans appended since the last Reset.
func (c *ClickHouseColumns) Rows() int { return c.ts.Rows() }

// Reset empties the columns, keeping their memory, for the next block.
func (c *ClickHouseColumns) Reset() {
	for _, col := range c.input {
		col.Data.(interface{ Reset() }).Reset()
	}
}

// Append adds the row of s, formatted as the collector formats OTLP spans
// (see NewClickHouseRow).
func (c *ClickHouseColumns) Append(s *Span) {
	res := c.resource(s.Resource)
	c.ts.Append(s.Start)
	c.traceID.appendHex(s.TraceID[:])
	c.spanID.appendHex(s.SpanID[:])
	if s.ParentSpanID.IsValid() {
		c.parentID.appendHex(s.ParentSpanID[:])
	} else {
		c.parentID.Append("")
	}
	c.state.Append("")
	c.name.Append(s.Name)
	c.kind.Append(spanKindName(s.Kind))
	c.service.Append(res.service)
	for i, k := range res.keys {
		c.resAttrs.keys.appendAt(i, k)
		c.resAttrs.values.Append(res.values[i])
	}
	c.resAttrs.endRow()
	c.scopeName.Append(ScopeName)
	c.scopeVersion.Append("")
	for i, kv := range s.Attributes {
		c.spanAttrs.keys.appendAt(i, string(kv.Key))
		c.spanAttrs.values.appendValue(kv.Value)
	}
	c.spanAttrs.endRow()
	c.duration.Append(uint64(max(s.End.Sub(s.Start), 0)))
	c.statusCode.Append(statusCodeName(s))
	c.statusMessage.Append(s.StatusMessage)
	c.evTS.Append(nil)
	c.evName.Append(nil)
	c.evAttrs.Append(nil)
	c.linkTraceID.Append(nil)
	c.linkSpanID.Append(nil)
	c.linkState.Append(nil)
	c.linkAttrs.Append(nil)
}

func (c *ClickHouseColumns) resource(res *resource.Resource) *renderedResource {
	if res == c.lastRes && c.lastR != nil {
		return c.lastR
	}
	r, ok := c.resources[res]
	if !ok {
		r = c.render(res)
	}
	c.lastRes, c.lastR = res, r
	return r
}

func (c *ClickHouseColumns) render(res *resource.Resource) *renderedResource {
	if len(c.resources) >= maxResources {
		clear(c.resources)
	}
	r := &renderedResource{}
	if res != nil {
		for _, kv := range res.Attributes() {
			r.keys = append(r.keys, string(kv.Key))
			r.values = append(r.values, kv.Value.Emit())
			if kv.Key == "service.name" {
				r.service = kv.Value.Emit()
			}
		}
	}
	c.resources[res] = r
	return r
}

// strRefs is a String column that keeps the strings appended rather than
// copies: the spans outlive the block, so each string is copied once, into
// the block. The large ones, stack traces, are shared between spans.
// Values that are not strings yet are formatted into arena.
type strRefs struct {
	vals  []string
	arena []byte
}

var _ proto.ColInput = (*strRefs)(nil)

func (c *strRefs) Append(s string) { c.vals = append(c.vals, s) }

// appendArena appends what was formatted into the arena from start on.
// Growing the arena leaves the strings made before pointing into the old
// array, unchanged; only Reset lets the bytes be written again.
func (c *strRefs) appendArena(start int) {
	if start == len(c.arena) {
		c.vals = append(c.vals, "")
		return
	}
	c.vals = append(c.vals, unsafe.String(&c.arena[start], len(c.arena)-start))
}

// appendHex appends id hex-encoded, as the collector writes IDs.
func (c *strRefs) appendHex(id []byte) {
	start := len(c.arena)
	c.arena = hex.AppendEncode(c.arena, id)
	c.appendArena(start)
}

// appendValue appends v as attribute.Value.Emit spells it, without making a
// string of a number.
func (c *strRefs) appendValue(v attribute.Value) {
	start := len(c.arena)
	switch v.Type() {
	case attribute.STRING:
		c.Append(v.AsString())
		return
	case attribute.INT64:
		c.arena = strconv.AppendInt(c.arena, v.AsInt64(), 10)
	case attribute.BOOL:
		c.arena = strconv.AppendBool(c.arena, v.AsBool())
	default:
		c.Append(v.Emit())
		return
	}
	c.appendArena(start)
}

func (c *strRefs) Type() proto.ColumnType { return proto.ColumnTypeString }
func (c *strRefs) Rows() int              { return len(c.vals) }

func (c *strRefs) Reset() {
	c.vals = c.vals[:0]
	c.arena = c.arena[:0]
}

func (c *strRefs) EncodeColumn(b *proto.Buffer) {
	// Appending to a local slice, not to b.Buf, spares a GC write barrier
	// per append.
	buf := b.Buf
	for _, s := range c.vals {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	b.Buf = buf
}

func (c *strRefs) WriteColumn(w *proto.Writer) { w.ChainBuffer(c.EncodeColumn) }

// lowCardStr is a LowCardinality(String) column that interns its values as
// they are appended, so that encoding needs no second pass through a map.
type lowCardStr struct {
	dict  proto.ColStr
	index map[string]uint32
	keys  []uint32
	// last caches, per position in a row (an attribute's index), the
	// value seen there last: rows built by one SpanBuilder put the same
	// key strings in the same places, and comparing a string's pointer and
	// length is cheaper than hashing it.
	last [maxLastKeys]lastKey
	raw  proto.ColLowCardinalityRaw
}

const maxLastKeys = 32

type lastKey struct {
	p     *byte
	n     int
	index uint32
	ok    bool
}

var (
	_ proto.ColInput     = (*lowCardStr)(nil)
	_ proto.Preparable   = (*lowCardStr)(nil)
	_ proto.StateEncoder = (*lowCardStr)(nil)
)

func (c *lowCardStr) init() {
	c.index = map[string]uint32{}
	c.raw.Index = &c.dict
}

// Append adds a row holding s.
func (c *lowCardStr) Append(s string) { c.appendAt(0, s) }

// appendAt adds a row holding s, found at position pos of its row.
func (c *lowCardStr) appendAt(pos int, s string) {
	if pos >= maxLastKeys {
		c.keys = append(c.keys, c.intern(s))
		return
	}
	l := &c.last[pos]
	p := unsafe.StringData(s)
	if !l.ok || l.p != p || l.n != len(s) {
		*l = lastKey{p: p, n: len(s), index: c.intern(s), ok: true}
	}
	c.keys = append(c.keys, l.index)
}

func (c *lowCardStr) intern(s string) uint32 {
	i, ok := c.index[s]
	if !ok {
		i = uint32(c.dict.Rows())
		c.dict.Append(s)
		c.index[s] = i
	}
	return i
}

func (c *lowCardStr) Type() proto.ColumnType {
	return proto.ColumnTypeLowCardinality.Sub(proto.ColumnTypeString)
}

func (c *lowCardStr) Rows() int { return len(c.keys) }

func (c *lowCardStr) Reset() {
	c.dict.Reset()
	clear(c.index)
	c.keys = c.keys[:0]
	c.last = [maxLastKeys]lastKey{}
	c.raw.Reset()
}

// Prepare picks the narrowest key type for the dictionary, as ClickHouse
// does, and fills the keys in.
func (c *lowCardStr) Prepare() error {
	c.raw.Keys8, c.raw.Keys16, c.raw.Keys32 = c.raw.Keys8[:0], c.raw.Keys16[:0], c.raw.Keys32[:0]
	switch n := c.dict.Rows(); {
	case n <= math.MaxUint8+1:
		c.raw.Key = proto.KeyUInt8
		for _, k := range c.keys {
			c.raw.Keys8 = append(c.raw.Keys8, uint8(k))
		}
	case n <= math.MaxUint16+1:
		c.raw.Key = proto.KeyUInt16
		for _, k := range c.keys {
			c.raw.Keys16 = append(c.raw.Keys16, uint16(k))
		}
	default:
		c.raw.Key = proto.KeyUInt32
		c.raw.Keys32 = append(c.raw.Keys32, c.keys...)
	}
	return nil
}

func (c *lowCardStr) EncodeState(b *proto.Buffer)  { c.raw.EncodeState(b) }
func (c *lowCardStr) EncodeColumn(b *proto.Buffer) { c.raw.EncodeColumn(b) }
func (c *lowCardStr) WriteColumn(w *proto.Writer)  { c.raw.WriteColumn(w) }

// attrMapCol is a Map(LowCardinality(String), String) column.
type attrMapCol struct {
	offsets proto.ColUInt64
	keys    lowCardStr
	values  strRefs
}

var (
	_ proto.ColInput     = (*attrMapCol)(nil)
	_ proto.Preparable   = (*attrMapCol)(nil)
	_ proto.StateEncoder = (*attrMapCol)(nil)
)

// endRow ends the row whose pairs were appended since the last one.
func (m *attrMapCol) endRow() { m.offsets.Append(uint64(m.keys.Rows())) }

func (m *attrMapCol) Type() proto.ColumnType {
	return proto.ColumnTypeMap.Sub(m.keys.Type(), proto.ColumnTypeString)
}

func (m *attrMapCol) Rows() int { return m.offsets.Rows() }

func (m *attrMapCol) Reset() {
	m.offsets.Reset()
	m.keys.Reset()
	m.values.Reset()
}

func (m *attrMapCol) Prepare() error              { return m.keys.Prepare() }
func (m *attrMapCol) EncodeState(b *proto.Buffer) { m.keys.EncodeState(b) }

func (m *attrMapCol) EncodeColumn(b *proto.Buffer) {
	if m.Rows() == 0 {
		return
	}
	m.offsets.EncodeColumn(b)
	m.keys.EncodeColumn(b)
	m.values.EncodeColumn(b)
}

func (m *attrMapCol) WriteColumn(w *proto.Writer) {
	if m.Rows() == 0 {
		return
	}
	m.offsets.WriteColumn(w)
	m.keys.WriteColumn(w)
	m.values.WriteColumn(w)
}
