package natsx_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/natsx"
	"github.com/convergence-dev/convergence/pkg/events"
)

// TestCluster_ThreeNodesR3_StreamLeaderKilled_NothingLostOrDoubled runs three embedded nodes
// with the platform's streams at three replicas, publishes through the cluster, stops the node
// that leads the stream, and publishes on, each message retried under its id until the cluster
// acknowledges it: every message is stored exactly once and in order, and the cluster takes
// publishes again within a bounded time, which the test prints.
func TestCluster_ThreeNodesR3_StreamLeaderKilled_NothingLostOrDoubled(t *testing.T) {
	t.Parallel()
	auth := authority(t)
	nodes := map[string]*natsx.Embedded{}
	for i, emb := range natstest.Cluster(t, auth, 3, t.TempDir()) {
		nodes[fmt.Sprintf("n%d", i+1)] = emb
	}

	opts, err := auth.Connect(natsauth.Admin, "cluster-test")
	require.NoError(t, err)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.ClientURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return natsx.EnsureStreams(t.Context(), js, 3) == nil }, 60*time.Second, 250*time.Millisecond,
		"the cluster forms and takes the streams at three replicas")
	// A service's process, connected as an admin, ensures the streams as it starts: they keep
	// their three copies.
	require.NoError(t, natsx.EnsureStreams(t.Context(), js, natsx.KeepReplicas))

	const perPhase = 100
	publish := func(i int) time.Duration {
		started := time.Now()
		deadline := started.Add(60 * time.Second)
		for {
			_, err := js.Publish(t.Context(), events.SubjectConvergeCompleted, fmt.Appendf(nil, "%d", i), jetstream.WithMsgID(fmt.Sprintf("m-%d", i)))
			if err == nil {
				return time.Since(started)
			}
			require.True(t, time.Now().Before(deadline), "message %d not acknowledged within 60s: %v", i, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range perPhase {
		publish(i)
	}

	stream, err := js.Stream(t.Context(), events.StreamConvergeResults)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, 1+len(info.Cluster.Replicas), "three copies of the stream")
	leader := info.Cluster.Leader
	require.Contains(t, nodes, leader)
	nodes[leader].Shutdown()
	t.Logf("stopped %s, the stream's leader", leader)

	recovery := publish(perPhase) // The first publish after the kill waits for a new leader.
	for i := perPhase + 1; i < 2*perPhase; i++ {
		publish(i)
	}
	t.Logf("the cluster took publishes again %s after its stream leader stopped", recovery.Round(time.Millisecond))

	info, err = stream.Info(t.Context())
	require.NoError(t, err)
	require.NotEqual(t, leader, info.Cluster.Leader, "another node leads the stream")
	require.EqualValues(t, 2*perPhase, info.State.Msgs, "every message stored once")
	for seq := uint64(1); seq <= 2*perPhase; seq++ {
		m, err := stream.GetMsg(t.Context(), seq)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(seq-1), string(m.Data), "in order")
	}
}

func TestStartEmbedded_ClusterRouteNotAURL_SaysSo(t *testing.T) {
	t.Parallel()
	_, err := natsx.StartEmbedded(natsx.EmbeddedConfig{
		StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1, Auth: authority(t),
		Cluster: &natsx.ClusterConfig{Name: "test", ServerName: "n1", Host: "127.0.0.1", Port: -1, Routes: []string{"127.0.0.1:6222"}},
	}, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, `route "127.0.0.1:6222" is not a nats-route://host:port URL`)
}
