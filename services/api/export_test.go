package api

import "context"

// SweepReservationsOnce runs one sweep of stale budget reservations.
func (s *Service) SweepReservationsOnce(ctx context.Context) (int, error) { return s.sweepOnce(ctx) }

// BudgetAlertsOnce looks at the budgets' alert thresholds once.
func (s *Service) BudgetAlertsOnce(ctx context.Context) (int, error) { return s.budgetAlertsOnce(ctx) }
