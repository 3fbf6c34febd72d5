package api

import "context"

// SweepReservationsOnce runs one sweep of stale budget reservations.
func (s *Service) SweepReservationsOnce(ctx context.Context) (int, error) { return s.sweepOnce(ctx) }
