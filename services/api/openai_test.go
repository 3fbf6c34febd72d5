package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/api"
)

// TestOpenAI_SDKConvergesThroughThePlatform points OpenAI's own Go SDK at the platform with a
// tenant's key: the models list the convergences, a chat completion runs one (the converged
// output as the message, its usage, its id and score alongside), and what the platform cannot
// do is refused with a message the SDK surfaces.
func TestOpenAI_SDKConvergesThroughThePlatform(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 2*time.Millisecond)
	envID, key := c.insertTenant("acme", "running")
	sdk := openai.NewClient(option.WithBaseURL(c.URL+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))

	models, err := sdk.Models.List(t.Context())
	require.NoError(t, err)
	var ids []string
	for _, m := range models.Data {
		ids = append(ids, m.ID)
	}
	require.Equal(t, []string{"convergence-design", "convergence-review", "convergence-decide", "convergence-plan",
		"convergence-analyze", "convergence-generate", "convergence-custom"}, ids)

	completion, err := sdk.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model: "convergence-design",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("The service runs on one host; keep it simple."),
			openai.UserMessage("Design a rate limiter for a multi-tenant API. [sim:converge]"),
		},
		Metadata:    shared.Metadata{"agent_a_role": "Solution Architect", "agent_b_role": "Security Reviewer"},
		Temperature: openai.Float(0.2), // Accepted and left to the agents' own calls.
		Seed:        openai.Int(7),
	})
	require.NoError(t, err)
	require.Len(t, completion.Choices, 1)
	require.Equal(t, "stop", string(completion.Choices[0].FinishReason))
	require.NotEmpty(t, completion.Choices[0].Message.Content)
	require.Positive(t, completion.Usage.PromptTokens)
	require.Positive(t, completion.Usage.CompletionTokens)
	require.Equal(t, completion.Usage.PromptTokens+completion.Usage.CompletionTokens, completion.Usage.TotalTokens)

	// The extra field has the task, which is an ordinary task of the tenant's: the same
	// output, usage and roles, the system message as its context.
	var extra struct {
		TaskID string `json:"taskId"`
		Score  int    `json:"convergenceScore"`
		Stop   string `json:"stopReason"`
	}
	require.NoError(t, json.Unmarshal([]byte(completion.JSON.ExtraFields["convergence"].Raw()), &extra))
	require.Equal(t, "converged", extra.Stop)
	require.Equal(t, "chatcmpl-"+extra.TaskID, completion.ID)
	a := c.call(t, http.MethodGet, "/api/v1/converge/"+extra.TaskID, key, nil)
	require.Equal(t, http.StatusOK, a.Status, "%s", a.Raw)
	task := a.task(t)
	require.Equal(t, "design", task.Type)
	require.Equal(t, "Solution Architect", task.AgentARole)
	require.Equal(t, "Security Reviewer", task.AgentBRole)
	require.Equal(t, completion.Choices[0].Message.Content, task.Result.Output)
	require.Equal(t, extra.Score, task.Result.ConvergenceScore)
	require.Equal(t, completion.Usage.TotalTokens, task.Usage.TotalTokens)
	var context string
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT request->>'context' FROM api.tasks WHERE id = $1`, extra.TaskID).Scan(&context))
	require.Equal(t, "The service runs on one host; keep it simple.", context)
	var owner int64
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT env_id FROM api.tasks WHERE id = $1`, extra.TaskID).Scan(&owner))
	require.Equal(t, envID, owner)

	// Streamed: the SDK's accumulator puts together the same kind of answer.
	stream := sdk.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
		Model:         "convergence-review",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Review this API design. [sim:converge]")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		require.True(t, acc.AddChunk(stream.Current()))
		chunks++
	}
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())
	require.GreaterOrEqual(t, chunks, 3, "the role, the content, the finish reason")
	require.Len(t, acc.Choices, 1)
	require.Equal(t, "assistant", string(acc.Choices[0].Message.Role))
	require.NotEmpty(t, acc.Choices[0].Message.Content)
	require.Equal(t, "stop", acc.Choices[0].FinishReason)
	require.Positive(t, acc.Usage.TotalTokens)
	streamed := c.call(t, http.MethodGet, "/api/v1/converge/"+strings.TrimPrefix(acc.ID, "chatcmpl-"), key, nil).task(t)
	require.Equal(t, "review", streamed.Type)
	require.Equal(t, acc.Choices[0].Message.Content, streamed.Result.Output)
	require.Equal(t, acc.Usage.TotalTokens, streamed.Usage.TotalTokens)

	// A streamed retry under the Idempotency-Key of the first streams the first one's task.
	streamAgain := func() (string, bool) {
		t.Helper()
		var header http.Header
		s := sdk.Chat.Completions.NewStreaming(t.Context(), openai.ChatCompletionNewParams{
			Model:    "convergence-plan",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Plan a migration. [sim:converge]")},
		}, option.WithHeader("Idempotency-Key", "stream-1"), option.WithMiddleware(
			func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
				resp, err := next(r)
				if resp != nil {
					header = resp.Header
				}
				return resp, err
			}))
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		require.NoError(t, s.Err())
		require.NoError(t, s.Close())
		require.NotEmpty(t, acc.Choices[0].Message.Content)
		return acc.ID, header.Get("Idempotent-Replayed") == "true"
	}
	first, replayed := streamAgain()
	require.False(t, replayed)
	again, replayed := streamAgain()
	require.True(t, replayed)
	require.Equal(t, first, again, "the same task, streamed again")
	var plans int
	require.NoError(t, c.Pool.QueryRow(t.Context(), `SELECT count(*) FROM api.tasks WHERE env_id = $1 AND request->>'type' = 'plan'`, envID).Scan(&plans))
	require.Equal(t, 1, plans, "no second task ran")

	for _, bad := range []struct {
		params openai.ChatCompletionNewParams
		want   string
	}{
		{openai.ChatCompletionNewParams{Model: "gpt-4o", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}},
			`model "gpt-4o" is not a convergence`},
		{openai.ChatCompletionNewParams{Model: "convergence-design", Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("only context")}},
			"send at least one user message"},
		{openai.ChatCompletionNewParams{Model: "convergence-design", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
			Metadata: shared.Metadata{"colour": "blue"}}, `metadata: "colour" is not known`},
	} {
		_, err := sdk.Chat.Completions.New(t.Context(), bad.params)
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
		require.Contains(t, apiErr.Message, bad.want)
	}

	// Without a tenant key: refused like every tenant endpoint.
	stranger := openai.NewClient(option.WithBaseURL(c.URL+"/v1"), option.WithAPIKey("sk_tenant_nope"), option.WithMaxRetries(0))
	_, err = stranger.Models.List(t.Context())
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
}

// A convergence that outlasts the sync wait is answered 504 with the task to follow, and runs
// on.
func TestOpenAI_OutlastsTheSyncWait_504WithTheTask(t *testing.T) {
	t.Parallel()
	c := newConvergeEnv(t, 100*time.Millisecond) // Seven calls: about 0.7 s a task.
	_, key := c.insertTenant("acme", "running")
	url := c.serveAPIWith(api.ConvergeConfig{SyncWait: 200 * time.Millisecond})
	sdk := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	_, err := sdk.Chat.Completions.New(t.Context(), openai.ChatCompletionNewParams{
		Model:    "convergence-plan",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Plan a migration. [sim:converge]")},
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusGatewayTimeout, apiErr.StatusCode)
	require.Contains(t, apiErr.Message, "still running after 200ms; follow it with GET /api/v1/converge/tsk_")
	id := strings.TrimPrefix(apiErr.Response.Header.Get("Location"), "/api/v1/converge/")
	require.NotEmpty(t, id)
	final := c.waitTask(t, key, id, finished)
	require.EqualValues(t, "converged", final.Result.StopReason)
}
