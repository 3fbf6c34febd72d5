package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
)

// TestSecrets_NeverLogged runs a flow that makes every kind of secret a tenant has (its API
// key, its webhook signing secret and the one rotated in after it) and uses them, the admin
// token with them, and then requires that none of them is in anything the platform logged, nor
// in the tenant container's own log.
func TestSecrets_NeverLogged(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	tn := s.spawn(t, "e2e-secrets", false)
	sdk := s.sdk(t, tn.APIKey)

	var first, second struct {
		Webhook struct {
			Secret string `json:"secret"`
		} `json:"webhook"`
	}
	code, raw := s.do(t, http.MethodGet, "/api/v1/webhooks/secret", tn.APIKey, nil)
	require.Equal(t, http.StatusOK, code, "%s", raw)
	require.NoError(t, json.Unmarshal(raw, &first))
	code, raw = s.do(t, http.MethodPost, "/api/v1/webhooks/secret/rotate", tn.APIKey, nil)
	require.Equal(t, http.StatusOK, code, "%s", raw)
	require.NoError(t, json.Unmarshal(raw, &second))
	require.True(t, strings.HasPrefix(first.Webhook.Secret, "whsec_"))
	require.NotEqual(t, first.Webhook.Secret, second.Webhook.Secret)

	// A task through the tenant app (its key on the wire), one with a webhook, and a refused
	// admin call made with the tenant's key.
	code, raw = call(t, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/api/converge", tn.Port), "", map[string]any{"prompt": "Design a login page"})
	require.Equal(t, http.StatusOK, code, "%s", raw)
	code, raw = s.do(t, http.MethodPost, "/api/v1/converge", tn.APIKey,
		map[string]any{"prompt": "Review this", "webhookUrl": "https://hooks.example.invalid/convergence"})
	require.Equal(t, http.StatusOK, code, "%s", raw)
	var done struct {
		TaskID string `json:"taskId"`
	}
	require.NoError(t, json.Unmarshal(raw, &done))
	_, err := sdk.Task(t.Context(), done.TaskID)
	require.NoError(t, err)
	code, _ = s.do(t, http.MethodGet, "/api/v1/tenant", tn.APIKey, nil)
	require.Equal(t, http.StatusUnauthorized, code, "an admin route refuses the tenant's key")

	cli := dockertest.Client(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rc, err := cli.ContainerLogs(ctx, tn.ContainerName, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	require.NoError(t, err)
	var tenantLog strings.Builder
	_, err = stdcopy.StdCopy(&tenantLog, &tenantLog, rc)
	require.NoError(t, err)
	_ = rc.Close()
	require.Contains(t, tenantLog.String(), "tenant listening", "the tenant's log was read")

	logged := s.Logs()
	require.Contains(t, logged, `"msg":"http request"`, "the platform's log was captured")
	for name, secret := range map[string]string{
		"tenant API key":         tn.APIKey,
		"webhook secret":         first.Webhook.Secret,
		"rotated webhook secret": second.Webhook.Secret,
		"admin token":            adminToken,
	} {
		// The key's part after its public prefix is what must never show.
		require.NotContains(t, logged, secret[len(secret)/2:], "the platform logged the %s", name)
		require.NotContains(t, tenantLog.String(), secret[len(secret)/2:], "the tenant logged the %s", name)
	}
}
