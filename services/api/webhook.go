package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
)

// webhookAnswer is the body of the webhook secret endpoints.
type webhookAnswer struct {
	Success bool          `json:"success"`
	Webhook webhookSecret `json:"webhook"`
}

type webhookSecret struct {
	events.WebhookSecret
	// Scheme says how deliveries are signed, for whoever writes the receiver.
	Scheme string `json:"scheme"`
}

const signatureScheme = "Standard Webhooks v1: webhook-signature is v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>, keyed with the base64-decoded secret after whsec_"

// webhookSecret answers GET /api/v1/webhooks/secret: the tenant's signing secret, which the
// converger keeps and makes on first use. Every task with a webhookUrl is signed with it.
func (h *convergeAPI) webhookSecret(c echo.Context) error {
	return h.answerSecret(c, false)
}

// rotateWebhookSecret answers POST /api/v1/webhooks/secret/rotate: a new secret. The previous
// one keeps signing deliveries beside it for a day, so the receiver can switch without
// rejecting anything.
func (h *convergeAPI) rotateWebhookSecret(c echo.Context) error {
	return h.answerSecret(c, true)
}

func (h *convergeAPI) answerSecret(c echo.Context, rotate bool) error {
	s, err := natsrpc.Call[events.WebhookSecretRequest, events.WebhookSecret](c.Request().Context(), h.s.deps.NC,
		events.SubjectWebhookSecret, events.WebhookSecretRequest{EnvID: tenantOf(c).EnvID, Rotate: rotate})
	if err != nil {
		return fromService(err, "the converger, which keeps webhook secrets,")
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, webhookAnswer{Success: true, Webhook: webhookSecret{WebhookSecret: s, Scheme: signatureScheme}})
}
