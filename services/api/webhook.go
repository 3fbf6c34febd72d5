package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/natsrpc"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/pkg/events"
)

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
	w := contract.WebhookSigningSecret{
		Secret: s.Secret, PreviousSecret: s.PreviousSecret, CreatedAt: s.CreatedAt, RotatedAt: s.RotatedAt, Scheme: signatureScheme,
	}
	if s.PreviousExpiresAt != nil {
		w.PreviousExpiresAt = *s.PreviousExpiresAt
	}
	return c.JSON(http.StatusOK, contract.WebhookSecretAnswer{Success: true, Webhook: w})
}
