package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/propagation"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Delivery is one webhook to send: a task's result, or another event of a tenant's (TaskID
// empty), such as a budget alert.
type Delivery struct {
	ID     string
	TaskID string
	EnvID  int64
	URL    string
	// EventType is the payload's type, e.g. "converge.completed".
	EventType string
	// Data is the payload's data: the task as GET returns it, or the event's data.
	Data any
}

// payload is the body of a delivery, in the Standard Webhooks shape.
type payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"`
}

// Body is the body d sends, stamped now.
func (d Delivery) Body() ([]byte, error) {
	body, err := json.Marshal(payload{Type: d.EventType, Timestamp: time.Now().UTC(), Data: d.Data})
	if err != nil {
		return nil, fmt.Errorf("encode webhook payload: %w", err)
	}
	return body, nil
}

// TraceParent is the W3C traceparent of ctx's span, which a delivery keeps so that its
// attempts join the span's trace; "" when ctx has no span.
func TraceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// NewDeliveryID returns a new delivery ID.
func NewDeliveryID() string { return "msg_" + events.NewID() }

// Enqueue records d in tx, to be delivered once tx commits, and makes sure the tenant has a
// secret to sign it with. A task has at most one delivery, and an ID is used once: enqueueing
// another for the same task, or with the same ID, does nothing.
func Enqueue(ctx context.Context, tx pgx.Tx, secrets *Secrets, d Delivery) error {
	body, err := d.Body()
	if err != nil {
		return err
	}
	if _, err := secrets.Ensure(ctx, tx, d.EnvID); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO webhook_deliveries (id, task_id, env_id, url, event_type, payload, traceparent)
		VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6, NULLIF($7, ''))
		ON CONFLICT DO NOTHING`, d.ID, d.TaskID, d.EnvID, d.URL, d.EventType, body, TraceParent(ctx))
	if err != nil {
		return fmt.Errorf("record webhook delivery: %w", err)
	}
	return nil
}
