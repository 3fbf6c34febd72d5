package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrWebhookSignature is what VerifyWebhook returns for a delivery it cannot vouch for.
var ErrWebhookSignature = errors.New("convergence: webhook signature does not verify")

// DefaultWebhookTolerance is how far a delivery's timestamp may be from now.
const DefaultWebhookTolerance = 5 * time.Minute

// VerifyWebhook checks that a webhook delivery (its headers and its body, as received) was
// signed by the platform with one of secrets (whsec_..., see Client.WebhookSecret; pass the
// previous one too during a rotation), and was sent within tolerance of now (0 means
// DefaultWebhookTolerance), which stops replays. The scheme is Standard Webhooks v1:
// webhook-signature holds "v1,<base64 HMAC-SHA256 of webhook-id.webhook-timestamp.body>"
// entries, keyed with the base64-decoded secret after whsec_. It returns nil, or an error
// wrapping ErrWebhookSignature.
func VerifyWebhook(header http.Header, body []byte, tolerance time.Duration, secrets ...string) error {
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	id, ts, sigs := header.Get("webhook-id"), header.Get("webhook-timestamp"), header.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.Join(ErrWebhookSignature, errors.New("webhook-id, webhook-timestamp and webhook-signature are required"))
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.Join(ErrWebhookSignature, errors.New("webhook-timestamp is not Unix seconds"))
	}
	if d := time.Since(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.Join(ErrWebhookSignature, errors.New("webhook-timestamp is too far from now"))
	}
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil || len(key) == 0 {
			continue
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := mac.Sum(nil)
		for _, sig := range strings.Fields(sigs) {
			version, value, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			if got, err := base64.StdEncoding.DecodeString(value); err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrWebhookSignature
}
