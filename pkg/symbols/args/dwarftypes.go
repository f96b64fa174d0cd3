package args

import (
	"debug/dwarf"
	"fmt"
	"slices"
)

// A typeReader builds debug/dwarf types from the units read, as
// debug/dwarf's Data.Type does, except that a struct's fields are read only
// when complete asks for them: a pointer's target is a struct without
// fields until a capture follows the pointer. Reading every type reachable
// from a parameter, as Data.Type does, reads most of a large program's
// types.
//
// Malformed DWARF can describe types that contain themselves in ways that
// would make debug/dwarf's String and Size, or the walks over struct
// fields, recurse forever and crash the tracer: those are errors here.
type typeReader struct {
	info  *debugInfo
	cache map[uint64]dwarf.Type
	// fields holds the structs whose fields have not been read, with the
	// offset of their entry.
	fields map[*dwarf.StructType]uint64
	// reading are the types being read, innermost last.
	reading []readingType
	// completing are the structs whose fields are being completed.
	completing map[*dwarf.StructType]bool
	// err is a cycle found: the types read may then recurse forever.
	err error
}

type readingType struct {
	off uint64
	tag dwarf.Tag
}

func newTypeReader(info *debugInfo) *typeReader {
	return &typeReader{info: info, cache: map[uint64]dwarf.Type{}, fields: map[*dwarf.StructType]uint64{}, completing: map[*dwarf.StructType]bool{}}
}

// cycle checks the types from one being read to the innermost, which
// refers back to the first. Go has such cycles (type P *P: a typedef and a
// pointer), but a type's name goes through pointers, arrays, qualifiers and
// function types until a named one, and its size and underlying type
// through arrays, qualifiers and typedefs: a cycle of only those would be
// followed forever.
func cycle(types []readingType) error {
	name, size := true, true
	for _, t := range types {
		switch t.tag {
		case dwarf.TagPointerType, dwarf.TagSubroutineType:
			size = false
		case dwarf.TagTypedef:
			name = false
		case dwarf.TagArrayType, dwarf.TagConstType, dwarf.TagVolatileType, dwarf.TagRestrictType:
		default:
			name, size = false, false
		}
	}
	if name || size {
		return fmt.Errorf("DWARF type at %#x refers to itself", types[0].off)
	}
	return nil
}

// maxTypeDepth bounds the nesting of types read by value: no sane program
// nests structs and arrays this deep, and a cycle in malformed DWARF must
// not recurse forever.
const maxTypeDepth = 100

// typ returns the type whose entry is at section offset off.
func (r *typeReader) typ(off uint64) (dwarf.Type, error) {
	if r.err != nil {
		return nil, r.err
	}
	if t, ok := r.cache[off]; ok {
		if i := slices.IndexFunc(r.reading, func(x readingType) bool { return x.off == off }); i >= 0 {
			if r.err = cycle(r.reading[i:]); r.err != nil {
				return nil, r.err
			}
		}
		return t, nil
	}
	t, err := r.read(off)
	if err != nil {
		// As in debug/dwarf: a type that failed is not cached.
		delete(r.cache, off)
		return nil, err
	}
	return t, nil
}

// typeOf returns the type e refers to; none means void.
func (r *typeReader) typeOf(e die) (dwarf.Type, error) {
	if !e.hasType {
		return &dwarf.VoidType{}, nil
	}
	return r.typ(e.typ)
}

func (r *typeReader) read(off uint64) (dwarf.Type, error) {
	e, u, next, err := r.info.entryAt(off)
	if err != nil {
		return nil, err
	}
	r.reading = append(r.reading, readingType{off, e.tag})
	defer func() { r.reading = r.reading[:len(r.reading)-1] }()
	// Every type goes into the cache before the types it refers to are
	// read, so cycles end.
	var typ dwarf.Type
	switch e.tag {
	case dwarf.TagArrayType:
		t := new(dwarf.ArrayType)
		typ = t
		r.cache[off] = t
		if t.Type, err = r.typeOf(e); err != nil {
			return nil, err
		}
		var dims []int64
		err = u.children(e, next, func(k die, _, _ int) (bool, error) {
			switch k.tag {
			case dwarf.TagSubrangeType:
				count := int64(-1) // as in x[]
				switch {
				case k.hasCount:
					count = k.count
				case k.hasUpperBound:
					count = k.upperBound + 1
				case len(dims) > 0:
					count = 0
				}
				dims = append(dims, count)
			case dwarf.TagEnumerationType:
				return false, fmt.Errorf("DWARF entry at %#x: enumeration type as array bound", k.off)
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		if len(dims) == 0 {
			dims = []int64{-1}
		}
		t.Count = dims[0]
		for i := len(dims) - 1; i >= 1; i-- {
			t.Type = &dwarf.ArrayType{Type: t.Type, Count: dims[i]}
		}

	case dwarf.TagBaseType:
		if !e.hasEncoding {
			return nil, fmt.Errorf("DWARF entry at %#x: base type %s without encoding", off, e.name)
		}
		var b *dwarf.BasicType
		switch e.encoding {
		case 0x01: // DW_ATE_address
			t := new(dwarf.AddrType)
			typ, b = t, &t.BasicType
		case 0x02: // DW_ATE_boolean
			t := new(dwarf.BoolType)
			typ, b = t, &t.BasicType
		case 0x03: // DW_ATE_complex_float
			t := new(dwarf.ComplexType)
			typ, b = t, &t.BasicType
		case 0x04: // DW_ATE_float
			t := new(dwarf.FloatType)
			typ, b = t, &t.BasicType
		case 0x05: // DW_ATE_signed
			t := new(dwarf.IntType)
			typ, b = t, &t.BasicType
		case 0x06: // DW_ATE_signed_char
			t := new(dwarf.CharType)
			typ, b = t, &t.BasicType
		case 0x07: // DW_ATE_unsigned
			t := new(dwarf.UintType)
			typ, b = t, &t.BasicType
		case 0x08: // DW_ATE_unsigned_char
			t := new(dwarf.UcharType)
			typ, b = t, &t.BasicType
		default:
			return nil, fmt.Errorf("DWARF entry at %#x: base type %s with unknown encoding %d", off, e.name, e.encoding)
		}
		b.Name = e.name
		r.cache[off] = typ

	case dwarf.TagStructType, dwarf.TagClassType, dwarf.TagUnionType:
		// Go names every struct type, anonymous ones by their
		// definition; the name of an unnamed one would be its fields'.
		if e.name == "" {
			return nil, fmt.Errorf("DWARF entry at %#x: unnamed struct type", off)
		}
		t := &dwarf.StructType{StructName: e.name, Incomplete: e.declaration, Kind: "struct"}
		switch e.tag {
		case dwarf.TagClassType:
			t.Kind = "class"
		case dwarf.TagUnionType:
			t.Kind = "union"
		}
		typ = t
		r.cache[off] = t
		r.fields[t] = off

	case dwarf.TagConstType, dwarf.TagVolatileType, dwarf.TagRestrictType:
		t := &dwarf.QualType{Qual: map[dwarf.Tag]string{dwarf.TagConstType: "const", dwarf.TagVolatileType: "volatile", dwarf.TagRestrictType: "restrict"}[e.tag]}
		typ = t
		r.cache[off] = t
		if t.Type, err = r.typeOf(e); err != nil {
			return nil, err
		}

	case dwarf.TagEnumerationType:
		// Go emits none; C's are named but their values are not read.
		t := &dwarf.EnumType{EnumName: e.name}
		typ = t
		r.cache[off] = t

	case dwarf.TagPointerType:
		t := new(dwarf.PtrType)
		typ = t
		r.cache[off] = t
		if t.Type, err = r.typeOf(e); err != nil {
			return nil, err
		}

	case dwarf.TagSubroutineType:
		t := new(dwarf.FuncType)
		typ = t
		r.cache[off] = t
		if t.ReturnType, err = r.typeOf(e); err != nil {
			return nil, err
		}
		t.ParamType = []dwarf.Type{}
		err = u.children(e, next, func(k die, _, _ int) (bool, error) {
			switch k.tag {
			case dwarf.TagFormalParameter:
				pt, err := r.typeOf(k)
				if err != nil {
					return false, err
				}
				t.ParamType = append(t.ParamType, pt)
			case dwarf.TagUnspecifiedParameters:
				t.ParamType = append(t.ParamType, &dwarf.DotDotDotType{})
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}

	case dwarf.TagTypedef:
		t := new(dwarf.TypedefType)
		t.Name = e.name
		typ = t
		r.cache[off] = t
		if t.Type, err = r.typeOf(e); err != nil {
			return nil, err
		}

	case dwarf.TagUnspecifiedType:
		t := new(dwarf.UnspecifiedType)
		t.Name = e.name
		typ = t
		r.cache[off] = t

	default:
		t := &dwarf.UnsupportedType{Tag: e.tag}
		t.Name = e.name
		typ = t
		r.cache[off] = t
	}

	size := int64(-1)
	switch {
	case e.hasByteSize:
		size = e.byteSize
	case e.tag == dwarf.TagPointerType:
		size = int64(u.asize)
	}
	typ.Common().ByteSize = size
	return typ, nil
}

// complete reads the fields of t, if it is a struct, and of every struct
// it holds by value (in fields and arrays, not behind pointers). An error
// stays: the structs it left half read must not be used.
func (r *typeReader) complete(t dwarf.Type) error {
	if err := r.completeDepth(t, 0); err != nil {
		r.err = err
	}
	return r.err
}

func (r *typeReader) completeDepth(t dwarf.Type, depth int) error {
	if r.err != nil {
		return r.err
	}
	if depth > maxTypeDepth {
		return fmt.Errorf("DWARF types nested more than %d deep", maxTypeDepth)
	}
	switch t := t.(type) {
	case *dwarf.StructType:
		if r.completing[t] {
			return fmt.Errorf("DWARF type %s contains itself", t.StructName)
		}
		off, ok := r.fields[t]
		if !ok {
			return nil
		}
		delete(r.fields, t)
		if err := r.readFields(t, off); err != nil {
			return err
		}
		r.completing[t] = true
		defer delete(r.completing, t)
		for _, f := range t.Field {
			if err := r.completeDepth(f.Type, depth+1); err != nil {
				return err
			}
		}
	case *dwarf.ArrayType:
		return r.completeDepth(t.Type, depth+1)
	case *dwarf.TypedefType:
		return r.completeDepth(t.Type, depth+1)
	case *dwarf.QualType:
		return r.completeDepth(t.Type, depth+1)
	}
	return nil
}

// readFields reads the members of the struct whose entry is at off, with
// debug/dwarf's fix for zero-length arrays, which DWARF writes out as if
// they had one element.
func (r *typeReader) readFields(t *dwarf.StructType, off uint64) error {
	e, u, next, err := r.info.entryAt(off)
	if err != nil {
		return err
	}
	t.Field = []*dwarf.StructField{}
	var lastType *dwarf.Type
	var lastOffset int64
	err = u.children(e, next, func(k die, _, _ int) (bool, error) {
		if k.tag != dwarf.TagMember {
			return true, nil
		}
		ft, err := r.typeOf(k)
		if err != nil {
			return false, err
		}
		f := &dwarf.StructField{Name: k.name, Type: ft, ByteOffset: k.memberLoc}
		if k.hasByteSize {
			f.ByteSize = k.byteSize
		}
		t.Field = append(t.Field, f)
		if lastOffset == f.ByteOffset && t.Kind != "union" {
			zeroArray(lastType)
		}
		lastType, lastOffset = &f.Type, f.ByteOffset
		return true, nil
	})
	if err != nil {
		return err
	}
	if t.Kind != "union" && e.hasByteSize && e.byteSize == lastOffset {
		zeroArray(lastType)
	}
	return nil
}

// zeroArray gives a zero-width array field its zero length.
func zeroArray(t *dwarf.Type) {
	if t == nil {
		return
	}
	at, ok := (*t).(*dwarf.ArrayType)
	if !ok || at.Type.Size() == 0 {
		return
	}
	z := *at
	z.Count = 0
	*t = &z
}
