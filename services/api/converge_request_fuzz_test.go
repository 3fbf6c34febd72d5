package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
	"github.com/convergence-dev/convergence/internal/taskspec"
)

// FuzzConvergeRequest feeds arbitrary bodies to the converge endpoints' decoding and
// validation: whatever arrives, the answer is a request to queue or a 400/413 that says what
// is wrong, never a panic. `go test` runs the seeds; `go test -fuzz FuzzConvergeRequest`
// searches further.
func FuzzConvergeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"prompt":"Design a rate limiter"}`,
		`{"prompt":"x","type":"custom","agentARole":"A","agentBRole":"B","maxRounds":10,"tokenBudget":1000,"timeoutSeconds":0.001}`,
		`{"prompt":"x","timeoutSeconds":1e308}`,
		`{"prompt":"x","timeoutSeconds":-0}`,
		`{"prompt":"x","maxRounds":-1}`,
		`{"prompt":"x","tokenBudget":9223372036854775807}`,
		`{"prompt":"x","webhookUrl":"http://[::1]:80/%zz"}`,
		`{"prompt":"x","model":"\u0000"}`,
		`{"prompt":"x"} {"prompt":"y"}`,
		`{"prompt":"x","unknown":1}`,
		`[]`, `null`, ``, `{"prompt":`,
	} {
		f.Add(seed, "")
		f.Add(seed, string(taskspec.TypeDesign))
	}
	f.Fuzz(func(t *testing.T, body, shortcut string) {
		e := echo.New()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/converge", strings.NewReader(body))
		req.Body = http.MaxBytesReader(httptest.NewRecorder(), req.Body, 1<<20)
		c := e.NewContext(req, httptest.NewRecorder())
		in, err := decodeConvergeInput(c)
		if err == nil {
			unlimited := planLimits{Plan: "unlimited", MaxRounds: taskspec.DefaultLimits().MaxRoundsCap, Models: []string{"*"}}
			_, err = validate(in, taskspec.TaskType(shortcut), taskspec.DefaultLimits(), unlimited)
		}
		var he *httpx.Error
		if err != nil && (!errors.As(err, &he) || (he.Status != http.StatusBadRequest && he.Status != http.StatusRequestEntityTooLarge) || he.Message == "") {
			t.Fatalf("body %q: %v is not a 400 or 413 that says what is wrong", body, err)
		}
	})
}
