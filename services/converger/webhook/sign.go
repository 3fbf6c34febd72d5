package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign returns the webhook-signature header value for a delivery: one "v1,<signature>" per
// secret, space-separated. The signature is the base64 HMAC-SHA256, keyed with the secret's
// decoded bytes, of "<id>.<unix seconds>.<body>".
func Sign(secrets []string, id string, at time.Time, body []byte) (string, error) {
	prefix := id + "." + strconv.FormatInt(at.Unix(), 10) + "."
	parts := make([]string, 0, len(secrets))
	for _, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
		if err != nil || len(key) == 0 {
			return "", errors.New("webhook secret is not whsec_<base64>")
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(prefix))
		mac.Write(body)
		parts = append(parts, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(parts, " "), nil
}
