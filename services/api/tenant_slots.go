package api

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/convergence-dev/convergence/internal/httpx"
)

// tenantSlots bounds what each tenant holds open on this API replica at once (sync waits,
// progress streams), so that one tenant's connections cannot use up the replica's for the
// others. The bound is per replica: with several replicas a tenant may hold that many on each.
type tenantSlots struct {
	what  string // what a slot is, for the 429's message: "sync waits"
	limit int

	mu   sync.Mutex
	held map[int64]int
}

func newTenantSlots(what string, limit int) *tenantSlots {
	return &tenantSlots{what: what, limit: limit, held: map[int64]int{}}
}

// take holds a slot of tenant envID and returns its release, or the 429 that refuses it.
func (s *tenantSlots) take(envID int64) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[envID] >= s.limit {
		return nil, &httpx.Error{
			Status:     http.StatusTooManyRequests,
			Code:       "too_many_open",
			Message:    fmt.Sprintf("this tenant has %d %s open, its limit; close one, or use async tasks and webhooks", s.limit, s.what),
			RetryAfter: time.Second,
		}
	}
	s.held[envID]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.held[envID]--; s.held[envID] == 0 {
				delete(s.held, envID)
			}
		})
	}, nil
}
