package probe

// Decode decodes one ring-buffer sample as Read does, without the captured
// values: it replays recorded samples (the pipeline benchmark does).
func Decode(sample []byte, r *Record) error { return decode(sample, r) }
