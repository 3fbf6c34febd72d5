package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/convergence-dev/convergence/pkg/api"
)

// Me is the tenant behind the client's key: its plan, the plan's limits in force as the API
// shows them, and what it uses.
type Me = api.Me

// Me answers who the client's key belongs to, its plan's limits and what it uses.
func (c *Client) Me(ctx context.Context) (*Me, error) {
	var me Me
	if err := c.call(ctx, http.MethodGet, "/api/v1/me", nil, &me); err != nil {
		return nil, err
	}
	return &me, nil
}

// Usage answers the tenant's own usage and cost from one UTC day to another, inclusive
// (YYYY-MM-DD; empty from is the first of this month, empty to today), grouped by groupBy
// (model, and day or month; none for the totals alone).
func (c *Client) Usage(ctx context.Context, from, to string, groupBy ...string) (*api.UsageSummary, error) {
	q := url.Values{}
	for k, v := range map[string]string{"from": from, "to": to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(groupBy) > 0 {
		q.Set("groupBy", strings.Join(groupBy, ","))
	}
	path := "/api/v1/usage/me"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var sum api.UsageSummary
	if err := c.call(ctx, http.MethodGet, path, nil, &sum); err != nil {
		return nil, err
	}
	return &sum, nil
}

// WebhookSecret is the secret the platform signs the tenant's webhooks with (whsec_...);
// after a rotation the previous one signs them too until PreviousExpiresAt.
type WebhookSecret = api.WebhookSigningSecret

// WebhookSecret answers the tenant's webhook signing secret, to verify deliveries with
// VerifyWebhook.
func (c *Client) WebhookSecret(ctx context.Context) (*WebhookSecret, error) {
	return c.webhookSecret(ctx, http.MethodGet, "/api/v1/webhooks/secret")
}

// RotateWebhookSecret makes a new webhook signing secret; the previous one signs deliveries
// too for a day, so receivers can move over.
func (c *Client) RotateWebhookSecret(ctx context.Context) (*WebhookSecret, error) {
	return c.webhookSecret(ctx, http.MethodPost, "/api/v1/webhooks/secret/rotate")
}

func (c *Client) webhookSecret(ctx context.Context, method, path string) (*WebhookSecret, error) {
	var a api.WebhookSecretAnswer
	if err := c.call(ctx, method, path, nil, &a); err != nil {
		return nil, err
	}
	return &a.Webhook, nil
}
