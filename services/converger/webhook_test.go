package converger_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/tasks"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// receiver is a webhook endpoint that answers the n-th request (from 1) with status(n).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []received
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t *testing.T, status func(n int) int) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, received{header: req.Header.Clone(), body: body})
		n := len(r.requests)
		r.mu.Unlock()
		w.WriteHeader(status(n))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.requests...)
}

// waitWebhook waits until task id's webhook delivery is no longer pending.
func (e *env) waitWebhook(envID int64, id string) tasks.Record {
	e.t.Helper()
	var rec tasks.Record
	require.Eventually(e.t, func() bool {
		var err error
		rec, err = e.store.Get(e.t.Context(), envID, id)
		require.NoError(e.t, err)
		return rec.Webhook != nil && rec.Webhook.Status != "pending"
	}, 10*time.Second, 10*time.Millisecond)
	return rec
}

func quickWebhooks(cfg *webhook.Config) {
	cfg.RetryBase, cfg.RetryMax, cfg.PollInterval = 10*time.Millisecond, 40*time.Millisecond, 10*time.Millisecond
}

func TestConverger_Webhook_SignedResultDeliveredOnceAfterRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	recv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	cfg := testConfig()
	cfg.Webhook.AllowPrivateTargets = true // The receiver listens on 127.0.0.1.
	quickWebhooks(&cfg.Webhook)
	e.startConverger(cfg, simulated.New(simulated.Config{}))

	id := e.submit(acme, tasks.Request{Prompt: "Review this design. [sim:converge]", Type: "review", WebhookURL: recv.URL + "/hooks/convergence?token=abc"})
	rec := e.waitWebhook(acme, id)

	require.EqualValues(t, "delivered", rec.Webhook.Status)
	require.Equal(t, 3, rec.Webhook.Attempts)
	require.Equal(t, http.StatusNoContent, rec.Webhook.LastStatusCode)
	got := recv.received()
	require.Len(t, got, 3, "two failures retried, then delivered, then never again")
	secret, err := e.webhooks.Ensure(t.Context(), e.pool, acme)
	require.NoError(t, err)
	verifier, err := standardwebhooks.NewWebhook(secret.Current)
	require.NoError(t, err)
	for _, r := range got {
		require.Equal(t, rec.Webhook.DeliveryID, r.header.Get("webhook-id"), "the delivery ID is the same on every retry")
		require.NoError(t, verifier.Verify(r.body, r.header), "a Standard Webhooks receiver accepts the signature")
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
	}
	var payload struct {
		Type string   `json:"type"`
		Data api.Task `json:"data"`
	}
	require.NoError(t, json.Unmarshal(got[2].body, &payload))
	require.Equal(t, "converge.completed", payload.Type)
	require.Equal(t, id, payload.Data.TaskID)
	require.EqualValues(t, tasks.StatusCompleted, payload.Data.Status)
	require.Equal(t, tasks.APIUsage(rec.Usage), payload.Data.Result.Usage)
	require.Equal(t, rec.Result.ConvergenceScore, payload.Data.Result.ConvergenceScore)

	// A tampered body or another tenant's secret does not verify.
	tampered := append([]byte(nil), got[2].body...)
	tampered[len(tampered)-2] ^= 1
	require.Error(t, verifier.Verify(tampered, got[2].header))
	other, err := standardwebhooks.NewWebhook(webhook.NewSecret())
	require.NoError(t, err)
	require.Error(t, other.Verify(got[2].body, got[2].header))
}

func TestConverger_Webhook_AfterRotation_SignedWithBothSecrets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	cfg := testConfig()
	cfg.Webhook.AllowPrivateTargets = true
	quickWebhooks(&cfg.Webhook)
	e.startConverger(cfg, simulated.New(simulated.Config{}))

	old, err := e.webhooks.Ensure(t.Context(), e.pool, acme)
	require.NoError(t, err)
	rotated, err := e.webhooks.Rotate(t.Context(), e.pool, acme, webhook.RotationGrace)
	require.NoError(t, err)
	require.NotEqual(t, old.Current, rotated.Current)
	require.Equal(t, old.Current, rotated.Previous)

	id := e.submit(acme, tasks.Request{Prompt: "Decide. [sim:stalemate]", Type: "decide", WebhookURL: recv.URL})
	require.EqualValues(t, "delivered", e.waitWebhook(acme, id).Webhook.Status)
	got := recv.received()
	require.Len(t, got, 1)
	for _, s := range []string{old.Current, rotated.Current} {
		v, err := standardwebhooks.NewWebhook(s)
		require.NoError(t, err)
		require.NoError(t, v.Verify(got[0].body, got[0].header), "receivers on either secret accept it during the grace period")
	}
}

func TestWebhookSecrets_SealedAtRest_OpenAfterKeyRotationAndResealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	acme, beta := e.tenant("acme"), e.tenant("beta")
	oldLine := seal.NewKeyLine()
	oldKeys, err := seal.Parse([]byte(oldLine))
	require.NoError(t, err)
	before := webhook.NewSecrets(oldKeys)
	first, err := before.Ensure(ctx, e.pool, acme)
	require.NoError(t, err)
	second, err := before.Rotate(ctx, e.pool, acme, webhook.RotationGrace)
	require.NoError(t, err)
	// A secret stored before sealing existed.
	legacy := webhook.NewSecret()
	_, err = e.pool.Exec(ctx, `INSERT INTO converger.webhook_secrets (env_id, secret) VALUES ($1, $2)`, beta, legacy)
	require.NoError(t, err)

	stored := func(envID int64) (current string, previous *string) {
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT secret, previous_secret FROM converger.webhook_secrets WHERE env_id = $1`, envID).
			Scan(&current, &previous))
		return current, previous
	}
	cur, prev := stored(acme)
	require.NotContains(t, cur, second.Current, "the database holds no secret in the clear")
	require.NotNil(t, prev)
	require.NotContains(t, *prev, first.Current)

	// A new key first: everything still opens, and a reseal moves every row to it.
	newLine := seal.NewKeyLine()
	rotatedKeys, err := seal.Parse([]byte(newLine + "\n" + oldLine))
	require.NoError(t, err)
	after := webhook.NewSecrets(rotatedKeys)
	got, err := after.Ensure(ctx, e.pool, acme)
	require.NoError(t, err)
	require.Equal(t, second.Current, got.Current)
	require.Equal(t, first.Current, got.Previous)
	n, err := after.Reseal(ctx, e.pool)
	require.NoError(t, err)
	require.Equal(t, 2, n, "acme's two secrets under the old key and beta's from before sealing")
	n, err = after.Reseal(ctx, e.pool)
	require.NoError(t, err)
	require.Zero(t, n, "nothing left to reseal")
	cur, _ = stored(beta)
	require.NotContains(t, cur, legacy)

	// The old key can go now.
	newOnly, err := seal.Parse([]byte(newLine))
	require.NoError(t, err)
	final := webhook.NewSecrets(newOnly)
	for envID, want := range map[int64]string{acme: second.Current, beta: legacy} {
		got, err := final.Ensure(ctx, e.pool, envID)
		require.NoError(t, err)
		require.Equal(t, want, got.Current)
	}
	// And a row copied to another tenant does not open there.
	_, err = e.pool.Exec(ctx, `UPDATE converger.webhook_secrets SET secret = (SELECT secret FROM converger.webhook_secrets WHERE env_id = $1) WHERE env_id = $2`, acme, beta)
	require.NoError(t, err)
	_, err = final.Ensure(ctx, e.pool, beta)
	require.ErrorContains(t, err, "does not open")
}

func TestConverger_Webhook_LoopbackTargetRefusedByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	recv := newReceiver(t, func(int) int { return http.StatusOK })
	cfg := testConfig() // AllowPrivateTargets is off, as in production.
	quickWebhooks(&cfg.Webhook)
	e.startConverger(cfg, simulated.New(simulated.Config{}))

	id := e.submit(acme, tasks.Request{Prompt: "Decide. [sim:converge]", Type: "decide", WebhookURL: recv.URL})
	rec := e.waitWebhook(acme, id)
	require.EqualValues(t, "failed", rec.Webhook.Status)
	require.Equal(t, 1, rec.Webhook.Attempts, "a refused target is not retried")
	require.Contains(t, rec.Webhook.LastError, "127.0.0.1 is not a public address")
	require.Empty(t, recv.received(), "no request reached the loopback address")
	require.Equal(t, tasks.StatusCompleted, rec.Status, "the task itself is unaffected")
}

func TestConverger_Webhook_ReceiverDownForGood_GivesUpAfterRetryFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme")
	recv := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	cfg := testConfig()
	cfg.Webhook.AllowPrivateTargets = true
	quickWebhooks(&cfg.Webhook)
	cfg.Webhook.RetryFor = 300 * time.Millisecond
	e.startConverger(cfg, simulated.New(simulated.Config{}))

	id := e.submit(acme, tasks.Request{Prompt: "Decide. [sim:converge]", Type: "decide", WebhookURL: recv.URL})
	rec := e.waitWebhook(acme, id)
	require.EqualValues(t, "failed", rec.Webhook.Status)
	require.GreaterOrEqual(t, rec.Webhook.Attempts, 3)
	require.Equal(t, http.StatusInternalServerError, rec.Webhook.LastStatusCode)
	require.Len(t, recv.received(), rec.Webhook.Attempts)
}
