package webhook_test

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/webhook"
)

func TestPublic_OnlyPublicUnicastAddresses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1:248:1893:25c8:1946", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"255.255.255.255", false},
		{"224.0.0.1", false},
		{"fc00::1", false},
		{"fe80::1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"2002:a00:1::", false},   // 6to4 of 10.0.0.1
		{"198.18.0.1", false},
		{"192.0.2.1", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, webhook.Public(netip.MustParseAddr(tt.addr)), tt.addr)
	}
}

func TestSign_VerifiedByTheStandardWebhooksLibrary_WithEitherSecret(t *testing.T) {
	t.Parallel()
	current, previous := webhook.NewSecret(), webhook.NewSecret()
	require.True(t, strings.HasPrefix(current, "whsec_"))
	body := []byte(`{"type":"converge.completed","data":{"taskId":"tsk_1"}}`)
	now := time.Now()
	sig, err := webhook.Sign([]string{current, previous}, "msg_1", now, body)
	require.NoError(t, err)
	require.Len(t, strings.Split(sig, " "), 2)
	h := http.Header{}
	h.Set(webhook.HeaderID, "msg_1")
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(webhook.HeaderSignature, sig)
	for _, s := range []string{current, previous} {
		v, err := standardwebhooks.NewWebhook(s)
		require.NoError(t, err)
		require.NoError(t, v.Verify(body, h))
	}
	stranger, err := standardwebhooks.NewWebhook(webhook.NewSecret())
	require.NoError(t, err)
	require.Error(t, stranger.Verify(body, h))

	_, err = webhook.Sign([]string{"not base64!"}, "msg_1", now, body)
	require.Error(t, err)
}
