package syscalls

//go:generate go run gennames.go
