package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/natsauth"
	"github.com/convergence-dev/convergence/pkg/events"
)

func TestServeNATS_JetStreamOnFileStoreAndMonitorAnswers(t *testing.T) {
	t.Parallel()
	clientPort, monitorPort := freeTCPPort(t), freeTCPPort(t)
	store := t.TempDir()
	cfg := natsConfig{
		Listen:   "127.0.0.1:" + strconv.Itoa(clientPort),
		StoreDir: store,
		Monitor:  "127.0.0.1:" + strconv.Itoa(monitorPort),
		AuthDir:  t.TempDir(),
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveNATS(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil))) }()
	monitor := "http://" + cfg.Monitor
	require.Eventually(t, func() bool { return probeHTTP(t.Context(), monitor+"/healthz") == nil }, 20*time.Second, 50*time.Millisecond,
		"/healthz answers 200 once JetStream is up")

	_, err := nats.Connect("nats://" + cfg.Listen)
	require.ErrorContains(t, err, "Authorization Violation", "nobody connects without a user")
	creds := filepath.Join(t.TempDir(), "admin.creds")
	require.NoError(t, runNATS([]string{"creds", "admin", "-nats.auth-dir", cfg.AuthDir, "-o", creds}, io.Discard, io.Discard))
	nc, err := nats.Connect("nats://"+cfg.Listen, nats.UserCredentials(creds))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Stream(t.Context(), events.StreamConvergeResults)
	require.NoError(t, err, "the server made the platform's streams")
	s, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}})
	require.NoError(t, err)
	require.Equal(t, jetstream.FileStorage, s.CachedInfo().Config.Storage)
	_, err = js.Publish(t.Context(), "probe.one", []byte("kept"))
	require.NoError(t, err)
	matches, err := filepath.Glob(filepath.Join(store, "jetstream", "*", "streams", "PROBE"))
	require.NoError(t, err)
	require.NotEmpty(t, matches, "the stream lives in the store directory")

	metrics := get(t, monitor+"/metrics")
	streams := strconv.Itoa(len(events.Streams()) + 1)
	require.Contains(t, metrics, "convergence_nats_jetstream_streams "+streams)
	require.Contains(t, metrics, "convergence_nats_jetstream_messages 1")
	require.Contains(t, metrics, "convergence_nats_connections 1")
	jsz := get(t, monitor+"/jsz")
	require.Contains(t, jsz, `"streams":`+streams)
	require.Contains(t, jsz, `"sync_always":true`, "every write is fsynced")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("serveNATS did not return after its context ended")
	}
	require.Error(t, probeHTTP(t.Context(), monitor+"/healthz"), "nothing answers once stopped")
}

func TestServeNATS_MonitorPortTaken_ErrorNamesTheSetting(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cfg := natsConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Monitor: ln.Addr().String(), AuthDir: t.TempDir()}
	err = serveNATS(t.Context(), cfg, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, err, "CONVERGENCE_NATS_MONITOR")
}

func TestRunNATS_Probe(t *testing.T) {
	t.Parallel()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer ok.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"status":"not ready"}`, http.StatusServiceUnavailable)
	}))
	defer failing.Close()

	require.NoError(t, runNATS([]string{"-probe", ok.URL}, io.Discard, io.Discard))
	require.ErrorContains(t, runNATS([]string{"-probe", failing.URL}, io.Discard, io.Discard), "503 Service Unavailable: {\"status\":\"not ready\"}")
	require.ErrorContains(t, runNATS([]string{"-probe", "http://127.0.0.1:1/readyz"}, io.Discard, io.Discard), "connection refused")
	require.ErrorContains(t, runNATS([]string{"-probe", "127.0.0.1:3000"}, io.Discard, io.Discard), "not an http(s) URL")
}

func TestRunNATSInit_MakesTheAuthorityOnceThatCredsAreIssuedFrom(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "auth")
	require.NoError(t, runNATS([]string{"init", "-nats.auth-dir", dir}, io.Discard, io.Discard))
	operator, err := os.ReadFile(filepath.Join(dir, "operator.nk"))
	require.NoError(t, err)
	require.NoError(t, runNATS([]string{"init", "-nats.auth-dir", dir}, io.Discard, io.Discard))
	again, err := os.ReadFile(filepath.Join(dir, "operator.nk"))
	require.NoError(t, err)
	require.Equal(t, operator, again, "an authority made once stays")
	require.NoError(t, runNATS([]string{"creds", "-nats.auth-dir", dir, "-o", filepath.Join(dir, "api.creds"), "api"}, io.Discard, io.Discard))
	require.ErrorContains(t, runNATS([]string{"init"}, io.Discard, io.Discard), "-nats.auth-dir")
}

func TestRunNATS_StreamReplicasOutOfRange_SaysWhatToUse(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"0", "6"} {
		err := runNATS([]string{"-nats.stream-replicas", n}, io.Discard, io.Discard)
		require.ErrorContains(t, err, "nats.stream-replicas "+n+": JetStream keeps 1 to 5 copies of a stream; use 1 alone, 3 on a cluster of three")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// freeTCPPort returns a port on 127.0.0.1 that was free a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

func TestRunNATSCreds(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	err := runNATS([]string{"creds", "integrator", "-data-dir", dataDir}, io.Discard, io.Discard)
	require.ErrorContains(t, err, "no NATS authority in "+filepath.Join(dataDir, "nats-auth"), "no authority is made for a user nobody can use")

	_, err = natsauth.LoadOrCreate(filepath.Join(dataDir, "nats-auth"))
	require.NoError(t, err)
	var out strings.Builder
	require.NoError(t, runNATS([]string{"creds", "-data-dir", dataDir, "integrator"}, &out, io.Discard), "the role after the flags")
	require.Contains(t, out.String(), "-----BEGIN NATS USER JWT-----")
	require.Contains(t, out.String(), "-----BEGIN USER NKEY SEED-----")

	file := filepath.Join(t.TempDir(), "i.creds")
	require.NoError(t, runNATS([]string{"creds", "integrator", "-data-dir", dataDir, "-o", file, "-expires", "1h"}, io.Discard, io.Discard))
	info, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	role, _, err := natsauth.FileOptions(file)
	require.NoError(t, err)
	require.Equal(t, natsauth.Integrator, role)

	var revoked strings.Builder
	require.NoError(t, runNATS([]string{"revoke", "-data-dir", dataDir, "-creds", file}, &revoked, io.Discard))
	require.Contains(t, revoked.String(), "revoked NATS user U")
	require.ErrorContains(t, runNATS([]string{"revoke", "-data-dir", dataDir}, io.Discard, io.Discard), "give -creds FILE or -user")
	require.ErrorContains(t, runNATS([]string{"revoke", "-data-dir", dataDir, "-user", "nobody"}, io.Discard, io.Discard), "public key")

	require.ErrorContains(t, runNATS([]string{"creds", "root", "-data-dir", dataDir}, io.Discard, io.Discard), `unknown nats role "root"`)
	require.ErrorContains(t, runNATS([]string{"creds", "-data-dir", dataDir}, io.Discard, io.Discard), "name a role")
}
