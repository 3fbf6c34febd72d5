package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
	contract "github.com/convergence-dev/convergence/pkg/api"
	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/api/openapi"
)

func TestOpenAPI_TheDocumentIsValidAndDescribesEveryRoute(t *testing.T) {
	t.Parallel()
	require.NoError(t, openapi.Validate(), "kin-openapi's loader and validator accept openapi.yaml")
	doc, err := openapi.Load()
	require.NoError(t, err)
	require.Equal(t, "3.1.0", doc.OpenAPI)

	e := httpx.NewEcho(slog.New(slog.DiscardHandler))
	_, err = api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20},
		api.Deps{Echo: e, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	param := regexp.MustCompile(`:([A-Za-z]+)`)
	var undocumented []string
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound || strings.HasPrefix(r.Path, "/api-docs") {
			continue // The document and its page are not part of the API they describe.
		}
		path := param.ReplaceAllString(r.Path, "{$1}")
		item := doc.Paths.Find(path)
		if item != nil && item.GetOperation(r.Method) != nil {
			continue
		}
		undocumented = append(undocumented, r.Method+" "+path)
	}
	require.Empty(t, undocumented, "every route is in openapi.yaml")
	require.NotNil(t, doc.Paths.Find("/healthz").GetOperation(http.MethodGet))
}

func TestOpenAPI_ServedAtAPIDocs_WithAnInteractivePageThatLoadsNothingFromElsewhere(t *testing.T) {
	t.Parallel()
	e := httpx.NewEcho(slog.New(slog.DiscardHandler))
	_, err := api.New(api.Config{AdminToken: adminToken, MaxBodyBytes: 1 << 20},
		api.Deps{Echo: e, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	// get answers the status, content type and body of GET path.
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}

	status, contentType, page := get("/api-docs")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, contentType, "text/html")
	require.Contains(t, page, "/api-docs/openapi.json")
	assets := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	require.NotEmpty(t, assets)
	for _, a := range assets {
		require.True(t, strings.HasPrefix(a[1], "/api-docs/"), "%s is loaded from elsewhere", a[1])
		status, _, body := get(a[1])
		require.Equal(t, http.StatusOK, status, a[1])
		require.NotEmpty(t, body, a[1])
	}

	status, contentType, doc := get("/api-docs/openapi.json")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "application/json", contentType)
	want, err := openapi.JSON()
	require.NoError(t, err)
	require.JSONEq(t, string(want), doc)
	status, _, yaml := get("/api-docs/openapi.yaml")
	require.Equal(t, http.StatusOK, status)
	require.YAMLEq(t, string(contract.Document), yaml)
}
