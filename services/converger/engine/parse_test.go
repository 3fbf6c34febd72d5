package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
		want    Reply
		wantErr string
	}{
		{
			name:    "a complete reply",
			content: `{"proposal":" Cache per tenant. ","agreement":85,"open_issues":["eviction"],"concessions":["TTL"],"confidence":70}`,
			want:    Reply{Proposal: "Cache per tenant.", Agreement: 85, OpenIssues: []string{"eviction"}, Concessions: []string{"TTL"}, Confidence: 70},
		},
		{
			name:    "a fenced reply with fractional ratings",
			content: "```json\n{\"proposal\":\"x\",\"agreement\":0.85,\"open_issues\":[],\"concessions\":[],\"confidence\":0.5}\n```",
			want:    Reply{Proposal: "x", Agreement: 85, OpenIssues: []string{}, Concessions: []string{}, Confidence: 50},
		},
		{
			name:    "out-of-range ratings are clamped",
			content: `{"proposal":"x","agreement":140,"confidence":-3}`,
			want:    Reply{Proposal: "x", Agreement: 100, OpenIssues: []string{}, Concessions: []string{}, Confidence: 0},
		},
		{
			name:    "blank list items are dropped",
			content: `{"proposal":"x","agreement":10,"open_issues":[" ","real"],"concessions":null,"confidence":5}`,
			want:    Reply{Proposal: "x", Agreement: 10, OpenIssues: []string{"real"}, Concessions: []string{}, Confidence: 5},
		},
		{name: "prose", content: "I agree with everything.", wantErr: "not a JSON object"},
		{name: "no proposal", content: `{"agreement":100}`, wantErr: `no "proposal"`},
		{name: "an empty proposal", content: `{"proposal":"  ","agreement":100}`, wantErr: `no "proposal"`},
		{name: "no agreement never counts as agreement", content: `{"proposal":"x","open_issues":[]}`, wantErr: `no "agreement"`},
		{name: "a wrongly typed field", content: `{"proposal":"x","agreement":"high"}`, wantErr: "does not match the schema"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseReply(tt.content)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseSynthesis(t *testing.T) {
	t.Parallel()
	out, err := parseSynthesis(`{"output":" Final. "}`)
	require.NoError(t, err)
	require.Equal(t, "Final.", out)
	_, err = parseSynthesis(`{"summary":"x"}`)
	require.ErrorContains(t, err, `no "output"`)
}
