// A module named like cilium's, whose types exercise what the layout
// checker prunes and keeps: ciliumsrc's tests compare its results with the
// DWARF of this module's build.
module github.com/cilium/cilium

go 1.24
