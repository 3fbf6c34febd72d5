// Package periodic runs work on a timer for the services' background loops.
package periodic

import (
	"context"
	"time"
)

// Every calls fn every d until ctx is done. The first call comes after d; a call that takes
// longer than d delays the next rather than piling them up.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
