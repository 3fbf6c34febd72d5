package converger

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/consumer"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// budgetAlerts consumes the budget alerts the API tells of, and delivers those of tenants'
// budgets that name a webhook URL as webhooks, signed with the tenant's secret like its tasks'
// results.
func (s *Service) budgetAlerts() *consumer.Consumer[events.BudgetThreshold] {
	return consumer.New(s.deps.JS, consumer.Config{
		Name:        events.ConsumerConvergerBudgetAlerts,
		Stream:      events.StreamBilling,
		Subjects:    []string{events.SubjectBudgetThreshold},
		Concurrency: 4,
		MaxDeliver:  s.cfg.MaxDeliver,
		AckWait:     s.cfg.AckWait,
	}, s.deliverBudgetAlert, s.logger, nil)
}

// deliverBudgetAlert queues the webhook of one alert, once: its delivery ID is made of the
// event's, so a redelivered event queues nothing more.
func (s *Service) deliverBudgetAlert(ctx context.Context, ev consumer.Event[events.BudgetThreshold]) error {
	a := ev.Data
	if a.EnvID == 0 || a.WebhookURL == "" {
		return nil // an organization's budget, or one without a webhook
	}
	err := pgx.BeginFunc(ctx, s.deps.Pool, func(tx pgx.Tx) error {
		return webhook.Enqueue(ctx, tx, s.secrets, webhook.Delivery{ID: "msg_" + ev.Envelope.ID, EnvID: a.EnvID,
			URL: a.WebhookURL, EventType: "budget.threshold", Data: a})
	})
	if err != nil {
		return err
	}
	s.deliverer.Wake()
	return nil
}
