package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
)

// modelPriceTTL is how long an answer about a model's price is kept: a changed price table
// holds for new tasks within it (after the metering reloads the file).
const modelPriceTTL = 30 * time.Second

// modelPrices tells whether a task naming a model could be billed: it asks the converger which
// provider and model the task would call, then the metering what the price table in force
// charges for them. Answers are kept for modelPriceTTL, so a burst of tasks costs two questions;
// failures are not kept.
type modelPrices struct {
	nc *nats.Conn

	mu    sync.Mutex
	known map[string]pricedModel // by the model the task names
}

// pricedModel is what a task naming a model would call, and its price.
type pricedModel struct {
	resolved events.ModelResolved
	price    events.ModelPrice
	at       time.Time
}

func newModelPrices(nc *nats.Conn) *modelPrices {
	return &modelPrices{nc: nc, known: map[string]pricedModel{}}
}

// lookup returns what a task naming model ("" for the default) would call, and its price.
func (m *modelPrices) lookup(ctx context.Context, model string) (pricedModel, error) {
	m.mu.Lock()
	p, ok := m.known[model]
	m.mu.Unlock()
	if ok && time.Since(p.at) < modelPriceTTL {
		return p, nil
	}
	resolved, err := natsrpc.Call[events.ModelQuery, events.ModelResolved](ctx, m.nc, events.SubjectModelResolve, events.ModelQuery{Model: model})
	if err != nil {
		return p, fromService(err, "the converger, which names the model a task calls,")
	}
	price, err := natsrpc.Call[events.PriceQuery, events.ModelPrice](ctx, m.nc, events.SubjectPriceLookup, events.PriceQuery(resolved))
	if err != nil {
		return p, fromService(err, "the metering, which keeps the prices,")
	}
	p = pricedModel{resolved: resolved, price: price, at: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.known) >= maxKnownModels {
		clear(m.known) // Names are tenants' input: never keep an unbounded number.
	}
	m.known[model] = p
	return p, nil
}

// maxKnownModels bounds the answers kept.
const maxKnownModels = 1000

// checkPriced refuses a task whose model the price table does not price, so that no usage is
// recorded that cannot be billed; a model is free only when the table lists it at zero. When
// the converger or the metering does not answer, the task is refused with 503: nothing runs
// that might not be billed.
func (m *modelPrices) checkPriced(ctx context.Context, model string, plan planLimits) error {
	p, err := m.lookup(ctx, model)
	if err != nil {
		return err
	}
	if p.price.Priced {
		return nil
	}
	name := p.resolved.Model
	if name == "" {
		name = "the default model"
	}
	return &httpx.Error{Status: http.StatusBadRequest, Code: "model_not_priced",
		Message: fmt.Sprintf("model: %s of provider %s has no price in the price table in force (%s), so its use could not be billed; "+
			"name a model the table prices (plan %q allows %s), or ask the operator to price it",
			name, p.resolved.Provider, p.price.PriceVersion, plan.Plan, strings.Join(plan.Models, ", "))}
}
