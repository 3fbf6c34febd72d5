package natstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natsx"
)

// Cluster starts n embedded JetStream nodes of one cluster on 127.0.0.1, every node routing to
// all n (itself included, as a cluster's configuration does), each storing under dir, and
// shuts them down when the test ends. The route ports are picked before the nodes start, so
// another process may take one meanwhile: then the nodes are started again on new ones, up
// to three times. A cluster of one is a plain server.
func Cluster(t testing.TB, auth *natsauth.Authority, n int, dir string) []*natsx.Embedded {
	t.Helper()
	var err error
	for attempt := range 3 {
		var nodes []*natsx.Embedded
		if nodes, err = startCluster(auth, n, filepath.Join(dir, fmt.Sprintf("try-%d", attempt))); err == nil {
			t.Cleanup(func() {
				for _, emb := range nodes {
					emb.Shutdown()
				}
			})
			return nodes
		}
	}
	require.NoError(t, err, "start a JetStream cluster of %d", n)
	return nil
}

func startCluster(auth *natsauth.Authority, n int, dir string) ([]*natsx.Embedded, error) {
	routes := make([]string, n)
	ports := make([]int, n)
	for i := range ports {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	var nodes []*natsx.Embedded
	for i, port := range ports {
		ec := natsx.EmbeddedConfig{StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), Host: "127.0.0.1", Port: -1, Auth: auth}
		if n > 1 {
			ec.Cluster = &natsx.ClusterConfig{Name: "test", ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: port, Routes: routes}
		}
		emb, err := natsx.StartEmbedded(ec, slog.New(slog.DiscardHandler))
		if err != nil {
			for _, started := range nodes {
				started.Shutdown()
			}
			return nil, err
		}
		nodes = append(nodes, emb)
	}
	return nodes, nil
}
