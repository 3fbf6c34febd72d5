package events_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/pkg/events/eventstest"
)

func TestEnvelopeEncode_SameBytesAsJSONMarshal(t *testing.T) {
	t.Parallel()
	round := json.RawMessage(`{"round":1,"score":{"value":42},"a":{"proposal":"say \"data\":0 here"}}`)
	for name, data := range map[string]any{
		"progress with a round": events.ConvergeProgress{TaskID: "t1", Kind: events.ProgressRound, Round: round},
		"a result":              events.ConvergeCompleted{TaskID: "t2", EnvID: 7, Usage: events.Usage{InputTokens: 3, TotalTokens: 3}},
		"null data":             nil,
	} {
		env, err := events.NewEnvelope("convergence/test", events.TypeConvergeProgress, "t1", "req-1", data)
		require.NoError(t, err, name)
		want, err := json.Marshal(env)
		require.NoError(t, err, name)
		got, err := env.Encode()
		require.NoError(t, err, name)
		require.Equal(t, string(want), string(got), name)
		back, err := events.Decode(got)
		require.NoError(t, err, name)
		require.JSONEq(t, string(env.Data), string(back.Data), name)
	}
}

func TestEncodeProgress_SameEventAsTheGenericEncoding(t *testing.T) {
	t.Parallel()
	v, err := eventstest.NewValidator()
	require.NoError(t, err)
	round := json.RawMessage(`{"round":1,"score":{"value":42},"a":{"proposal":"a } and \"round\": here"}}`)
	for name, p := range map[string]events.ConvergeProgress{
		"a round":   {TaskID: "t1", Kind: events.ProgressRound, Round: round},
		"no round":  {TaskID: "t1", Kind: events.ProgressFinished, Status: "completed"},
		"a started": {TaskID: "t1", Kind: events.ProgressStarted, Status: "running"},
	} {
		got, err := events.EncodeProgress("convergence/test", p, "req-1")
		require.NoError(t, err, name)
		require.NoError(t, v.Validate(got), name)
		env, err := events.Decode(got)
		require.NoError(t, err, name)
		want, err := json.Marshal(p)
		require.NoError(t, err, name)
		require.Equal(t, string(want), string(env.Data), name)
		back, err := events.DecodeProgress(got)
		require.NoError(t, err, name)
		require.Equal(t, p, back, name)
	}
}
