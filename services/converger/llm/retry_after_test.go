package llm_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/converger/llm"
)

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"no header means no wait", nil, 0},
		{"seconds", map[string]string{"Retry-After": "3"}, 3 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "1.5"}, 1500 * time.Millisecond},
		{"milliseconds win over seconds", map[string]string{"Retry-After-Ms": "250", "Retry-After": "3"}, 250 * time.Millisecond},
		{"HTTP date in the future", map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{"HTTP date in the past means no wait", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"negative seconds mean no wait", map[string]string{"Retry-After": "-4"}, 0},
		{"garbage means no wait", map[string]string{"Retry-After": "soon"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			require.Equal(t, tt.want, llm.RetryAfter(h, now))
		})
	}
}

func TestStatusError_KindByStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   error
	}{
		{429, llm.ErrRateLimited},
		{500, llm.ErrServer},
		{502, llm.ErrServer},
		{529, llm.ErrServer},
		{408, llm.ErrServer},
		{400, llm.ErrPermanent},
		{401, llm.ErrPermanent},
		{404, llm.ErrPermanent},
		{422, llm.ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			err := llm.StatusError("p", tt.status, http.Header{"Retry-After": {"2"}}, nil)
			require.ErrorIs(t, err, tt.want)
			require.Equal(t, 2*time.Second, err.RetryAfter)
			require.Contains(t, err.Error(), "p: ")
		})
	}
}
