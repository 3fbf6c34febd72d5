package tasks

import "time"

// SetBatchTimeout sets how long one batch of w may take.
func SetBatchTimeout(w *Writer, d time.Duration) { w.timeout = d }
