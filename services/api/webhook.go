package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// webhookAnswer is the body of the webhook secret endpoints.
type webhookAnswer struct {
	Success bool          `json:"success"`
	Webhook webhookSecret `json:"webhook"`
}

type webhookSecret struct {
	webhook.Secret
	// Scheme says how deliveries are signed, for whoever writes the receiver.
	Scheme string `json:"scheme"`
}

const signatureScheme = "Standard Webhooks v1: webhook-signature is v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>, keyed with the base64-decoded secret after whsec_"

// webhookSecret answers GET /api/v1/webhooks/secret: the tenant's signing secret, created on
// first use. Every task with a webhookUrl is signed with it.
func (h *convergeAPI) webhookSecret(c echo.Context) error {
	s, err := webhook.EnsureSecret(c.Request().Context(), h.s.deps.Pool, tenantOf(c).EnvID)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, webhookAnswer{Success: true, Webhook: webhookSecret{Secret: s, Scheme: signatureScheme}})
}

// rotateWebhookSecret answers POST /api/v1/webhooks/secret/rotate: a new secret. The previous
// one keeps signing deliveries beside it for webhook.RotationGrace, so the receiver can switch
// without rejecting anything.
func (h *convergeAPI) rotateWebhookSecret(c echo.Context) error {
	s, err := webhook.Rotate(c.Request().Context(), h.s.deps.Pool, tenantOf(c).EnvID, webhook.RotationGrace)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, webhookAnswer{Success: true, Webhook: webhookSecret{Secret: s, Scheme: signatureScheme}})
}
