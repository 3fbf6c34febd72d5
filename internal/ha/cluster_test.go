package ha_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/dockertest"
	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/internal/natstest"
	"github.com/convergence-dev/convergence/internal/natsx"
	"github.com/convergence-dev/convergence/internal/pglocal"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/services/provisioner/runtime"
	"github.com/convergence-dev/convergence/services/provisioner/runtime/swarmtest"
)

const adminToken = "ha-admin-token-0123456789abcdef01"

// binary is the convergence command the replicas run, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "convergence-ha-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "convergence")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/convergence-dev/convergence/cmd/convergence").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	// The engine ends as the tests found it: out of the swarm a test made.
	if err := swarmtest.Teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "swarm teardown: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// cluster is the platform spread as it would be over several hosts: one PostgreSQL server, a
// JetStream cluster and replicas of every service, each replica a process of its own.
type cluster struct {
	t   testing.TB
	dir string
	// PostgreSQL, stopped and started again on the same port and data by restartPostgres.
	pgCfg pglocal.Config
	pgMu  sync.Mutex
	pg    *pglocal.Server
	Pool  *pgxpool.Pool
	// JetStream's nodes.
	auth     *natsauth.Authority
	nodes    []*natsx.Embedded
	natsURLs string
	creds    string
	// The replicas, each running every service.
	replicas []*replica
	ports    string
	prefix   string
	// swarm says the tenants are Swarm services.
	swarm bool
}

// replica is one `convergence serve` process running every service.
type replica struct {
	name string
	args []string
	log  string
	// API is the replica's API, as http://127.0.0.1:PORT.
	API string
	mu  sync.Mutex
	cmd *exec.Cmd
}

// startCluster starts PostgreSQL, natsNodes JetStream nodes (their streams with natsNodes
// copies) and two replicas, and waits until every replica is ready. args are more flags for
// the replicas.
func startCluster(t testing.TB, natsNodes int, args ...string) *cluster {
	t.Helper()
	dir := t.TempDir()
	// The postgres user reaches its data directory through the test's directories.
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o711))
	require.NoError(t, os.Chmod(dir, 0o711))
	c := &cluster{t: t, dir: dir, swarm: slices.Contains(args, "swarm")}
	c.startPostgres()
	c.startNATS(natsNodes)

	dockertest.TenantImage(t) // the spawns run the default template
	cli := dockertest.Client(t)
	run := dockertest.NewRun(t, cli)
	c.prefix = run.Prefix
	first, last := dockertest.PortRange(t, 8)
	c.ports = fmt.Sprintf("%d-%d", first, last)
	t.Cleanup(func() {
		// After the replicas stopped: the tenants they made carry the installation's label.
		var id string
		if err := c.Pool.QueryRow(context.Background(), `SELECT id FROM provisioner.installation`).Scan(&id); err == nil {
			if c.swarm {
				swarmtest.RemoveLabelled(t, cli, map[string]string{runtime.LabelInstance: id})
			}
			_ = dockertest.RemoveLabelled(context.Background(), cli, map[string]string{runtime.LabelInstance: id})
		}
	})
	_, err := seal.LoadOrCreateFile(filepath.Join(dir, "secrets.keys"))
	require.NoError(t, err)
	// One after the other: the first makes the provisioner's key the others share.
	for i := range 2 {
		r := c.newReplica(fmt.Sprintf("r%d", i+1), args)
		c.replicas = append(c.replicas, r)
		r.start(t)
		c.waitReady(r, 90*time.Second)
	}
	return c
}

func (c *cluster) startPostgres() {
	t := c.t
	c.pgCfg = pglocal.Config{Dir: filepath.Join(c.dir, "pg"), Port: dockertest.FreePort(t), NoSync: true,
		Settings: map[string]string{"max_connections": "200"}}
	var err error
	c.pg, err = pglocal.Start(t.Context(), c.pgCfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		c.pgMu.Lock()
		defer c.pgMu.Unlock()
		if c.pg != nil {
			_ = c.pg.Stop(context.Background())
		}
	})
	c.Pool, err = pgxpool.New(t.Context(), c.pg.URL())
	require.NoError(t, err)
	t.Cleanup(c.Pool.Close)
}

// restartPostgres stops the server (fast shutdown: every connection is cut) and starts it
// again on the same port and data.
func (c *cluster) restartPostgres() {
	c.pgMu.Lock()
	defer c.pgMu.Unlock()
	require.NoError(c.t, c.pg.Stop(c.t.Context()))
	var err error
	c.pg, err = pglocal.Start(c.t.Context(), c.pgCfg)
	require.NoError(c.t, err)
}

func (c *cluster) startNATS(n int) {
	t := c.t
	var err error
	c.auth, err = natsauth.LoadOrCreate(filepath.Join(c.dir, "nats-auth"))
	require.NoError(t, err)
	c.nodes = natstest.Cluster(t, c.auth, n, c.dir)
	var urls []string
	for _, emb := range c.nodes {
		urls = append(urls, emb.ClientURL())
	}
	c.natsURLs = strings.Join(urls, ",")

	// The streams with a copy on every node, as `convergence nats -nats.stream-replicas`
	// makes them; the replicas keep them so.
	opts, err := c.auth.Connect(natsauth.Admin, "ha-streams")
	require.NoError(t, err)
	nc, err := nats.Connect(c.natsURLs, opts...)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return natsx.EnsureStreams(t.Context(), js, n) == nil }, 60*time.Second, 250*time.Millisecond,
		"the JetStream cluster forms and takes the streams")

	creds, err := c.auth.Creds(natsauth.Admin, "ha-replica", 0)
	require.NoError(t, err)
	c.creds = filepath.Join(c.dir, "replica.creds")
	require.NoError(t, os.WriteFile(c.creds, creds, 0o600))
}

// stopNATSNode stops JetStream node i, as the loss of its host would.
func (c *cluster) stopNATSNode(i int) { c.nodes[i].Shutdown() }

func (c *cluster) newReplica(name string, args []string) *replica {
	t := c.t
	data := filepath.Join(c.dir, name)
	port := dockertest.FreePort(t)
	r := &replica{name: name, API: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(c.dir, name+".log")}
	r.args = []string{"serve",
		"-http.addr", fmt.Sprintf("127.0.0.1:%d", port),
		"-ops.addr", fmt.Sprintf("127.0.0.1:%d", dockertest.FreePort(t)),
		"-data-dir", data,
		"-database-url", c.pg.URL(),
		"-nats-url", c.natsURLs,
		"-nats.creds", c.creds,
		"-admin-token", adminToken,
		// What every replica shares: the keyring of webhook secrets, the provisioner's
		// sealing key.
		"-secrets.key-file", filepath.Join(c.dir, "secrets.keys"),
		"-provisioner.key-file", filepath.Join(c.dir, "provisioner.key"),
		"-provisioner.ports", c.ports,
		"-provisioner.runtime.name-prefix", c.prefix,
		// The firewall rules are the host's, not what these tests are about.
		"-provisioner.egress-policy", "off",
		"-provisioner.destroy-grace", "1s",
		"-converger.provider", "simulated",
		// The load's tenants create tasks as fast as the platform takes them.
		"-api.ratelimit.create-per-minute", "60000", "-api.ratelimit.create-burst", "1000",
		"-api.converge.max-tenant-tasks", "1000",
	}
	r.args = append(r.args, args...)
	t.Cleanup(func() { r.stop(t) })
	return r
}

// start runs the replica's process; its output goes to its log file.
func (r *replica) start(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	defer func() { _ = logFile.Close() }() // The process holds its own descriptor.
	cmd := exec.Command(binary, r.args...) //nolint:gosec // The test's own binary and arguments.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
}

// kill ends the replica's process with SIGKILL: no shutdown, as when its host dies.
func (r *replica) kill(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NotNil(t, r.cmd)
	require.NoError(t, r.cmd.Process.Kill())
	_ = r.cmd.Wait()
	r.cmd = nil
}

// stop ends the replica's process with SIGTERM, and with SIGKILL after 30 s.
func (r *replica) stop(t testing.TB) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Errorf("replica %s did not stop within 30s; killed", r.name)
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.cmd = nil
}

func (c *cluster) waitReady(r *replica, within time.Duration) {
	c.t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		code, _, err := send(c.t.Context(), http.MethodGet, r.API+"/readyz", "", "", nil)
		if err == nil && code == http.StatusOK {
			return
		}
	}
	c.t.Fatalf("replica %s not ready within %s; its log:\n%s", r.name, within, tail(r.log))
}

// tail returns the last lines of a log file, for a failure's message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-40):], "\n")
}

// send makes one request with token as its bearer (and idempotencyKey when not empty) and
// returns the status and body.
func send(ctx context.Context, method, url, token, idempotencyKey string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
