package e2e_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/client"
)

// TestSDK_AgainstRealAPI runs the SDK's contract against the real API server. The subtests
// share one platform, each with a tenant of its own.
func TestSDK_AgainstRealAPI(t *testing.T) {
	t.Parallel()
	s := startStack(t)

	t.Run("RateLimited429WithRetryAfter_Retried", func(t *testing.T) {
		t.Parallel()
		tn := s.spawn(t, "e2e-sdk-ratelimit", true)
		s.limitCreates(t, tn.EnvID, 60, 1) // one task at once, one more per second

		rec := &statusRecorder{next: http.DefaultTransport}
		sdk := s.sdk(t, tn.APIKey, client.WithHTTPClient(&http.Client{Transport: rec}), client.WithRetries(3, 10*time.Second))
		first, err := sdk.Converge(t.Context(), client.Request{Prompt: "first", Async: true})
		require.NoError(t, err)
		require.False(t, first.Finished(), "an async answer comes at once, before the task finishes")

		start := time.Now()
		second, err := sdk.Converge(t.Context(), client.Request{Prompt: "second", Async: true})
		require.NoError(t, err, "the 429 was retried")
		require.NotEqual(t, first.TaskID, second.TaskID)
		require.Equal(t, []int{http.StatusAccepted, http.StatusTooManyRequests, http.StatusAccepted}, rec.statuses())
		require.Equal(t, []string{"", "1", ""}, rec.retryAfters(), "the 429 said when to retry")
		require.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "the client waited as Retry-After said")

		// A client that may not wait that long gets the typed error at once.
		impatient := s.sdk(t, tn.APIKey, client.WithRetries(3, 100*time.Millisecond))
		_, err = impatient.Converge(t.Context(), client.Request{Prompt: "third", Async: true})
		var rateErr *client.RateLimitError
		require.ErrorAs(t, err, &rateErr)
		require.Equal(t, "rate_limited", rateErr.Code)
		require.Equal(t, time.Second, rateErr.RetryAfter)
	})

	t.Run("CancelContext_StopsWaitAndStreamPromptly", func(t *testing.T) {
		t.Parallel()
		tn := s.spawn(t, "e2e-sdk-cancel", true)
		sdk := s.sdk(t, tn.APIKey)
		// A task that never converges runs all its rounds: seconds with the simulated latency.
		task, err := sdk.Converge(t.Context(), client.Request{Prompt: "Pick a queue [sim:never]", MaxRounds: 10, Async: true})
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = sdk.Cancel(ctx, task.TaskID)
		})

		for name, follow := range map[string]func(ctx context.Context) error{
			"Wait": func(ctx context.Context) error {
				_, err := sdk.Wait(ctx, task.TaskID)
				return err
			},
			"Stream": func(ctx context.Context) error {
				return sdk.Stream(ctx, task.TaskID, func(client.Event) error { return nil })
			},
		} {
			ctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error, 1)
			go func() { errc <- follow(ctx) }()
			time.Sleep(500 * time.Millisecond) // well inside the task, which runs for seconds
			select {
			case err := <-errc:
				cancel()
				t.Fatalf("%s returned before the cancel, while the task runs: %v", name, err)
			default:
			}
			cancelled := time.Now()
			cancel()
			select {
			case err := <-errc:
				require.ErrorIs(t, err, context.Canceled, name)
				require.Less(t, time.Since(cancelled), 500*time.Millisecond, "%s stopped promptly", name)
			case <-time.After(2 * time.Second):
				t.Fatalf("%s did not stop within 2s of the cancel", name)
			}
		}
		running, err := sdk.Task(t.Context(), task.TaskID)
		require.NoError(t, err)
		require.False(t, running.Finished(), "the task outlived both cancels, so they were what stopped the calls")
	})

	t.Run("InvalidKey_ClientError", func(t *testing.T) {
		t.Parallel()
		for _, key := range []string{"sk_not_a_real_key", "not-even-well-formed"} {
			sdk := s.sdk(t, key)
			_, err := sdk.Converge(t.Context(), client.Request{Prompt: "hello"})
			var clientErr *client.ClientError
			require.ErrorAs(t, err, &clientErr, key)
			require.Equal(t, http.StatusUnauthorized, clientErr.StatusCode)
			require.Equal(t, "unauthorized", clientErr.Code)
			require.NotEmpty(t, clientErr.RequestID, "the error names the request for the platform's logs")
			var apiErr *client.APIError
			require.ErrorAs(t, err, &apiErr)
			require.NotErrorAs(t, err, new(*client.RateLimitError))
			require.NotErrorAs(t, err, new(*client.ServerError))
		}
	})
}

// statusRecorder records the status and Retry-After of every answer the SDK gets.
type statusRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	code []int
	ra   []string
}

func (r *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.code = append(r.code, resp.StatusCode)
		r.ra = append(r.ra, resp.Header.Get("Retry-After"))
		r.mu.Unlock()
	}
	return resp, err
}

func (r *statusRecorder) statuses() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.code...)
}

func (r *statusRecorder) retryAfters() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ra...)
}
