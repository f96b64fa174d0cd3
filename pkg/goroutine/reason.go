package goroutine

// A WaitReason is why a goroutine is parked.
type WaitReason struct {
	Name     string // as the runtime prints it, e.g. "sync.Mutex.Lock"
	Category Category
}

// Category groups the wait reasons that an account of where a call's time
// went tells apart.
type Category uint8

const (
	Other       Category = iota
	Mutex                // sync.Mutex.Lock (Go 1.20+; before, "semacquire" is Other)
	RWMutex              // sync.RWMutex.RLock and Lock
	ChanSend             // a channel send
	ChanReceive          // a channel receive
	Select               // a select statement
	Sleep                // time.Sleep
	IOWait               // the network poller: sockets, pipes, other pollable files
	GCAssist             // helping the garbage collector, or waiting to
	Cond                 // sync.Cond.Wait
)

var categoryNames = [...]string{
	Other:       "other",
	Mutex:       "mutex",
	RWMutex:     "rwmutex",
	ChanSend:    "chan send",
	ChanReceive: "chan receive",
	Select:      "select",
	Sleep:       "sleep",
	IOWait:      "IO wait",
	GCAssist:    "GC assist",
	Cond:        "cond",
}

func (c Category) String() string {
	if int(c) < len(categoryNames) {
		return categoryNames[c]
	}
	return "unknown"
}

// categories places the runtime's wait reasons, Go 1.18 through 1.26; any
// other is Other. A blocked channel operation inside a synctest bubble has
// its own reason, "(synctest)" in Go 1.24, "(durable)" since.
var categories = map[string]Category{
	"sync.Mutex.Lock":         Mutex,
	"sync.RWMutex.RLock":      RWMutex,
	"sync.RWMutex.Lock":       RWMutex,
	"chan send":               ChanSend,
	"chan send (nil chan)":    ChanSend,
	"chan send (synctest)":    ChanSend,
	"chan send (durable)":     ChanSend,
	"chan receive":            ChanReceive,
	"chan receive (nil chan)": ChanReceive,
	"chan receive (synctest)": ChanReceive,
	"chan receive (durable)":  ChanReceive,
	"select":                  Select,
	"select (no cases)":       Select,
	"select (synctest)":       Select,
	"select (durable)":        Select,
	"sleep":                   Sleep,
	"IO wait":                 IOWait,
	"GC assist wait":          GCAssist,
	"GC assist marking":       GCAssist,
	"sync.Cond.Wait":          Cond,
}
