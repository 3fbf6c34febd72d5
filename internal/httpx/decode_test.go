package httpx_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/httpx"
)

func TestDecodeJSON_BadBodies_SayWhatToFix(t *testing.T) {
	t.Parallel()
	type body struct {
		Name  string   `json:"name"`
		Count int      `json:"count"`
		Tags  []string `json:"tags,omitempty"`
	}
	for _, tt := range []struct {
		body, empty string
		status      int
		want        string
	}{
		{`{"name": "a", "count": 2}`, "send one", 0, ""},
		{``, "", 0, ""},
		{``, "send a JSON object", http.StatusBadRequest, "the request body is empty: send a JSON object"},
		{`{"name": 7}`, "x", http.StatusBadRequest, "name: must be a string, not a JSON number"},
		{`{"tags": "a"}`, "x", http.StatusBadRequest, "tags: must be an array, not a JSON string"},
		{`{"colour": "a"}`, "x", http.StatusBadRequest, `unknown field "colour"; the fields are name, count, tags`},
		{`{"name": "a"} {}`, "x", http.StatusBadRequest, "the body is not one valid JSON object"},
		{`{name: a}`, "x", http.StatusBadRequest, "the body is not one valid JSON object"},
		{`{"name": "` + strings.Repeat("a", 100) + `"}`, "x", http.StatusRequestEntityTooLarge, "over the limit of 64 bytes"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
		req.Body = http.MaxBytesReader(rec, req.Body, 64)
		var v body
		err := httpx.DecodeJSON(echo.New().NewContext(req, rec), &v, tt.empty)
		if tt.status == 0 {
			require.NoError(t, err, tt.body)
			continue
		}
		var e *httpx.Error
		require.ErrorAs(t, err, &e, tt.body)
		require.Equal(t, tt.status, e.Status, tt.body)
		require.Contains(t, e.Message, tt.want, tt.body)
	}
}
