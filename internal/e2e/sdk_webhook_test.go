package e2e_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/platform"
	"github.com/convergence-dev/convergence/pkg/client"
)

// The Go client tells a tenant who it is and what it used, and verifies the webhooks the
// platform signs: a delivery as sent verifies, one with its body or its timestamp changed, or
// checked with another secret, does not.
func TestSDK_MeUsageAndWebhooksTheClientVerifies(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *platform.Config) { c.Converger.Webhook.AllowPrivateTargets = true })
	tn := s.spawn(t, "e2e-sdk-hooks", true)
	sdk := s.sdk(t, tn.APIKey)
	ctx := t.Context()

	me, err := sdk.Me(ctx)
	require.NoError(t, err)
	require.Equal(t, tn.EnvID, me.EnvID)
	require.Equal(t, "e2e-sdk-hooks", me.Name)
	require.NotEmpty(t, me.Plan)

	hookURL, firstDelivery := webhookReceiver(t)
	secret, err := sdk.WebhookSecret(ctx)
	require.NoError(t, err)

	task, err := sdk.Design(ctx, "Design a cache [sim:converge]", client.WithWebhook(hookURL+"/hook"))
	require.NoError(t, err)
	require.Equal(t, client.StatusCompleted, task.Status)
	d := firstDelivery()
	require.NoError(t, client.VerifyWebhook(d.header, d.body, 0, secret.Secret), "a delivery as sent verifies")
	require.Contains(t, string(d.body), task.TaskID)

	tampered := bytes.Replace(d.body, []byte(task.TaskID), []byte("tsk_someone_else"), 1)
	require.ErrorIs(t, client.VerifyWebhook(d.header, tampered, 0, secret.Secret), client.ErrWebhookSignature)
	other, err := sdk.RotateWebhookSecret(ctx)
	require.NoError(t, err)
	require.NotEqual(t, secret.Secret, other.Secret)
	require.ErrorIs(t, client.VerifyWebhook(d.header, d.body, 0, other.Secret), client.ErrWebhookSignature, "another secret")
	require.NoError(t, client.VerifyWebhook(d.header, d.body, 0, other.Secret, secret.Secret), "during a rotation, with both")
	late := d.header.Clone()
	late.Set("webhook-timestamp", "1600000000")
	require.ErrorIs(t, client.VerifyWebhook(late, d.body, 0, secret.Secret), client.ErrWebhookSignature, "a replay from long ago")

	// The metering records the task from its result event, a moment after the answer.
	require.Eventually(t, func() bool {
		usage, err := sdk.Usage(ctx, "", "", "model")
		require.NoError(t, err)
		require.Equal(t, []string{"model"}, usage.GroupBy)
		// One group for the model's tokens, one for the container's time.
		return usage.Totals.TotalTokens == task.Result.Usage.TotalTokens && len(usage.Groups) == 2
	}, 30*time.Second, 100*time.Millisecond, "the task's tokens are in the tenant's usage, by model")
}
