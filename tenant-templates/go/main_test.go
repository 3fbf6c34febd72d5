package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealth_Get_AnswersOK(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)

	require.NoError(t, probe(t.Context(), srv.URL+"/health"))

	resp, err := srv.Client().Get(srv.URL + "/health")
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
}

func TestHealth_Post_MethodNotAllowed(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)

	resp, err := srv.Client().Post(srv.URL+"/health", "text/plain", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = resp.Body.Close() })
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestProbe_UnknownPath_Fails(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(nil, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)

	require.ErrorContains(t, probe(t.Context(), srv.URL+"/nope"), "status 404")
}
