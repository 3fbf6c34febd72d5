package api

import (
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConvergeConfig_ZeroFieldsTakeTheDefaultsTheFlagsHave(t *testing.T) {
	t.Parallel()
	var fromFlags ConvergeConfig
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fromFlags.RegisterFlags(fs)
	require.NoError(t, fs.Parse(nil))
	require.Equal(t, DefaultConvergeConfig(), fromFlags)
	require.Equal(t, DefaultConvergeConfig(), ConvergeConfig{}.withDefaults())
	require.NoError(t, ConvergeConfig{}.Validate())

	require.NoError(t, fs.Parse([]string{"-api.ratelimit.create-burst=5", "-api.converge.sync-wait=10s"}))
	require.Equal(t, 5, fromFlags.withDefaults().RateLimit.CreateBurst)
	require.Equal(t, 10*time.Second, fromFlags.withDefaults().SyncWait)
	require.Error(t, ConvergeConfig{SyncWait: time.Hour}.Validate())
	require.Error(t, ConvergeConfig{RateLimit: RateLimits{CreateBurst: -1}}.Validate())
}

func TestParsePrefer_RespondAsyncAndWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header []string
		want   preference
	}{
		{nil, preference{}},
		{[]string{"respond-async"}, preference{async: true}},
		{[]string{"wait=10"}, preference{wait: 10 * time.Second}},
		{[]string{"respond-async, wait=5"}, preference{async: true, wait: 5 * time.Second}},
		{[]string{"handling=lenient", "wait=3"}, preference{wait: 3 * time.Second}},
		{[]string{"wait=100000"}, preference{wait: MaxSyncWait}},
		{[]string{"wait=-1", "wait=soon"}, preference{}},
	}
	for _, tt := range tests {
		h := map[string][]string{}
		if tt.header != nil {
			h["Prefer"] = tt.header
		}
		require.Equal(t, tt.want, parsePrefer(h), "%q", tt.header)
	}
}
