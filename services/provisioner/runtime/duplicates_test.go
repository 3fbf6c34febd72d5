package runtime_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/runtime"
)

// The engine allows two networks with one name to a client that skips its duplicate check
// (or to two that race it). A tenant whose network name matches two then still spawns and is
// destroyed: the runtime removes its own empty duplicates instead of failing on the ambiguity.
func TestDuplicateNetworks_EmptyOnesOfThisRuntimeRemoved_SpawnAndDestroyGoOn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	labels := map[string]string{runtime.LabelManaged: "true", runtime.LabelEnvID: "5"}
	for k, v := range h.run.Labels {
		labels[k] = v
	}
	for range 2 {
		createWithoutDuplicateCheck(t, h.cli.DaemonHost(), h.rt.NetworkName(5), labels)
	}
	require.Len(t, networksNamed(t, h, h.rt.NetworkName(5)), 2, "two networks of one name")

	h.start(ctx, h.spec(5))
	require.Len(t, networksNamed(t, h, h.rt.NetworkName(5)), 1, "the tenant's network, and no duplicate")
	require.Positive(t, h.docker.DuplicateNetworksRemoved(), "and the removal is counted")

	_, err := h.rt.Remove(ctx, 5, 0)
	require.NoError(t, err)
	require.Empty(t, networksNamed(t, h, h.rt.NetworkName(5)))

	// A destroy finds two as well.
	for range 2 {
		createWithoutDuplicateCheck(t, h.cli.DaemonHost(), h.rt.NetworkName(6), labels)
	}
	_, err = h.rt.Remove(ctx, 6, 0)
	require.NoError(t, err)
	require.Empty(t, networksNamed(t, h, h.rt.NetworkName(6)))
}

func networksNamed(t *testing.T, h *harness, name string) []network.Summary {
	t.Helper()
	list, err := h.cli.NetworkList(t.Context(), network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", "^"+name+"$"))})
	require.NoError(t, err)
	return list
}

// createWithoutDuplicateCheck creates a bridge network through the engine's API with its
// duplicate check off, which the SDK always turns on.
func createWithoutDuplicateCheck(t *testing.T, host, name string, labels map[string]string) {
	t.Helper()
	socket, ok := strings.CutPrefix(host, "unix://")
	require.True(t, ok, "the engine at %s is not on a Unix socket", host)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	body, err := json.Marshal(map[string]any{"Name": name, "Driver": "bridge", "CheckDuplicate": false, "Labels": labels})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://docker/v1.41/networks/create", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
}
