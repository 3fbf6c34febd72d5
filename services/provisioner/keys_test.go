package provisioner_test

import (
	"archive/tar"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/apikey"
	"github.com/convergence-dev/convergence/internal/natsrpc"
	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// keyFile reads the API key file of tenant envID's container, requiring it to be the tenant
// user's alone.
func (h *harness) keyFile(envID int64) string {
	h.t.Helper()
	key, err := h.readKeyFile(envID)
	require.NoError(h.t, err)
	return key
}

// readKeyFile reads the API key file of tenant envID's container; while the file is being
// replaced, it may not be there.
func (h *harness) readKeyFile(envID int64) (string, error) {
	c, err := h.cli.ContainerInspect(h.t.Context(), h.svc.Runtime().ContainerName(envID))
	if err != nil {
		return "", err
	}
	rc, stat, err := h.cli.CopyFromContainer(h.t.Context(), c.ID, runtime.SecretsDir+"/api-key")
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return "", err
	}
	if stat.Mode.Perm() != 0o400 || hdr.Uid != 65532 {
		return "", fmt.Errorf("key file mode %v, owner %d: want 0400, the tenant user 65532", stat.Mode.Perm(), hdr.Uid)
	}
	b, err := io.ReadAll(tr)
	return string(b), err
}

func TestKeyRotation_NewKeyInTheRunningContainer_NotRestarted_WatcherDeliversAMissedOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tenant := h.spawn("keys-live")
	envID := envIDOf(tenant)
	first := tenant["apiKey"].(string)
	require.Equal(t, first, h.keyFile(envID))
	before := h.inspect(envID)

	code, body := h.do(http.MethodPost, tenantPath(envID, "/keys"), map[string]any{"overlapSeconds": 60})
	require.Equal(t, http.StatusCreated, code, "%v", body)
	require.Equal(t, true, body["delivered"])
	second := body["key"].(map[string]any)["apiKey"].(string)
	require.True(t, apikey.WellFormed(second))
	require.Equal(t, second, h.keyFile(envID), "the running container has the new key")
	after := h.inspect(envID)
	require.Equal(t, before.ID, after.ID, "the same container")
	require.Equal(t, before.State.StartedAt, after.State.StartedAt, "not restarted")
	require.Equal(t, before.Config.Labels[runtime.LabelSpecHash], after.Config.Labels[runtime.LabelSpecHash])
	var pending *time.Time
	require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT key_pending_since FROM environments WHERE id = $1`, envID).Scan(&pending))
	require.Nil(t, pending)

	// A rotation whose asker never asked for the delivery (it stopped in between): the
	// health watcher delivers the key once it waited long enough.
	recv, err := apikey.NewReceiver()
	require.NoError(t, err)
	rot, err := natsrpc.Call[events.KeyRotation, events.KeyRotated](t.Context(), h.apiNC, events.SubjectKeyRotate,
		events.KeyRotation{EnvID: envID, ReplyKey: recv.PublicKey()})
	require.NoError(t, err)
	third, err := recv.Open(envID, rot.SealedKey)
	require.NoError(t, err)
	require.Equal(t, apikey.Digest(third), rot.Key.KeyDigest)
	require.Equal(t, second, h.keyFile(envID), "not delivered before it is asked for")
	_, err = h.pool.Exec(t.Context(), `UPDATE environments SET key_pending_since = now() - interval '1 hour' WHERE id = $1`, envID)
	require.NoError(t, err)
	require.Eventually(t, func() bool { key, _ := h.readKeyFile(envID); return key == third }, 30*time.Second, 200*time.Millisecond,
		"the health watcher delivers the waiting key")
	require.Equal(t, before.ID, h.inspect(envID).ID)
	require.Eventually(t, func() bool {
		require.NoError(t, h.pool.QueryRow(t.Context(), `SELECT key_pending_since FROM environments WHERE id = $1`, envID).Scan(&pending))
		return pending == nil
	}, 10*time.Second, 100*time.Millisecond)

	// A container made after a rotation starts with the newest key.
	require.NoError(t, h.cli.ContainerRemove(t.Context(), before.ID, container.RemoveOptions{Force: true}))
	require.Eventually(t, func() bool {
		c, err := h.cli.ContainerInspect(t.Context(), h.svc.Runtime().ContainerName(envID))
		return err == nil && c.ID != before.ID && c.State.Running
	}, 60*time.Second, 200*time.Millisecond, "the health watcher recreates the container")
	require.Eventually(t, func() bool { key, _ := h.readKeyFile(envID); return key == third }, 10*time.Second, 100*time.Millisecond,
		"the new container has the newest key")
}
