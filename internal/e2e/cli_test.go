package e2e_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/internal/cli"
)

// TestCLI_OperatorFlow drives the operator commands against the running platform: create an
// organization, spawn a tenant in it, list, status, logs, usage, destroy — in tables and JSON.
func TestCLI_OperatorFlow(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	env := func(k string) (string, bool) {
		switch k {
		case "CONVERGENCE_API_URL":
			return s.API, true
		case "CONVERGENCE_ADMIN_TOKEN":
			return adminToken, true
		}
		return "", false
	}
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := cli.Run(t.Context(), args, env, &out, &errOut)
		return out.String(), err
	}

	out, err := run("org", "create", "cli-org", "-plan", "pro", "-o", "json")
	require.NoError(t, err)
	var org struct {
		Organization struct {
			OrgID int64 `json:"orgId"`
		} `json:"organization"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &org))
	orgID := strconv.FormatInt(org.Organization.OrgID, 10)

	out, err = run("org", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^`+orgID+`\s+cli-org\s+pro\s+0\s+`, out)
	out, err = run("org", "update", orgID, "-plan", "enterprise", "-max-tenants", "5")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^PLAN\s+enterprise$`, out)
	require.Regexp(t, `(?m)^MAX TENANTS\s+5$`, out)
	_, err = run("org", "update", orgID)
	require.ErrorContains(t, err, "nothing to change")

	out, err = run("tenant", "spawn", "cli-tenant", "-org", orgID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^STATUS\s+running$`, out)
	require.Regexp(t, `(?m)^API KEY\s+sk_tenant_\S+$`, out)
	require.Contains(t, out, "shown only now")
	envID := field(t, out, "ENV ID")

	out, err = run("tenant", "list", "-org", orgID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^`+envID+`\s+cli-tenant\s+`+orgID+`\s+running\s+healthy\s+\d+`, out)
	require.NotContains(t, out, "sk_tenant_", "the key is never listed")

	out, err = run("tenant", "status", envID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^CONTAINER\s+running$`, out)
	require.Regexp(t, `(?m)^MEMORY LIMIT\s+\d+$`, out)

	out, err = run("tenant", "logs", envID, "-tail", "5")
	require.NoError(t, err)
	require.Contains(t, out, "tenant listening")

	out, err = run("org", "budget", orgID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^SOURCE\s+none$`, out, "the enterprise plan sets no spend limit")
	out, err = run("tenant", "budget", envID, "-set", "2.50", "-alert-at", "0.5, 1")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^MONTHLY LIMIT\s+2.500000$`, out)
	require.Regexp(t, `(?m)^SOURCE\s+tenant$`, out)
	require.Regexp(t, `(?m)^REMAINING\s+2.500000$`, out)
	_, err = run("tenant", "budget", envID, "-set", "lots")
	require.ErrorContains(t, err, `monthlySpendLimit: amount "lots" is not a non-negative decimal number`)

	month := time.Now().UTC().Format("2006-01")
	out, err = run("invoice", "create", orgID, month)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^STATUS\s+draft$`, out)
	require.Regexp(t, `(?m)^PERIOD\s+`+month+`$`, out)
	invoiceID := field(t, out, "INVOICE ID")
	out, err = run("invoice", "list", orgID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^`+invoiceID+`\s+`+orgID+`\s+`+month+`\s+draft\s+`, out)
	out, err = run("invoice", "show", orgID, invoiceID, "-format", "csv")
	require.NoError(t, err)
	require.Contains(t, out, "envId,kind,provider,model")
	_, err = run("invoice", "finalize", orgID, invoiceID)
	require.ErrorContains(t, err, month+" has not ended")

	out, err = run("usage", "-group-by", "tenant", "-org", orgID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^TENANT\s+CALLS\s+TASKS`, out)
	require.Regexp(t, `(?m)^TOTAL\s+`, out)

	out, err = run("tenant", "keys", "list", envID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^KEY ID\s+PREFIX\s+ACTIVE`, out)
	require.Regexp(t, `(?m)^\d+\s+sk_tenant_\S+…\s+true\s+`, out)
	firstKey := strings.Fields(strings.Split(out, "\n")[1])[0]
	out, err = run("tenant", "keys", "rotate", envID, "-overlap", "1h")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^API KEY\s+sk_tenant_\S+$`, out)
	require.Contains(t, out, "shown only now")
	require.Regexp(t, `(?m)^`+firstKey+`\s+sk_tenant_\S+…\s+true\s+`, out, "the replaced key works until it expires")
	out, err = run("tenant", "keys", "revoke", envID, firstKey)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ACTIVE\s+false$`, out)
	_, err = run("tenant", "keys", "revoke", envID)
	require.ErrorContains(t, err, "give ENV_ID and KEY_ID")
	_, err = run("tenant", "keys", "rotate", envID, "-overlap", "-1s")
	require.ErrorContains(t, err, "-overlap -1s")

	out, err = run("tenant", "destroy", envID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^STATUS\s+destroyed$`, out)

	out, err = run("audit", "-tenant", envID)
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ID\s+AT\s+ACTOR\s+ACTION`, out)
	for _, action := range []string{"tenant.destroy", "key.revoke", "key.issue", "tenant.spawn"} {
		require.Regexp(t, `(?m)^\d+\s+\S+\s+admin:[0-9a-f]{12}\s+`+regexp.QuoteMeta(action)+`\s`, out)
	}
	out, err = run("audit", "-action", "org.update")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^\d+\s+\S+\s+admin:[0-9a-f]{12}\s+org\.update\s+organization `+orgID+`\s+400\s+invalid_request\s`, out)
	out, err = run("audit", "-action", "org.create", "-o", "json")
	require.NoError(t, err)
	require.Contains(t, out, `"target": "organization `+orgID+`"`)

	// Mistakes are told plainly, with the API's own words where it answered.
	_, err = run("tenant", "status", "999999")
	require.ErrorContains(t, err, "not found")
	_, err = run("tenant", "status", "abc")
	require.ErrorContains(t, err, "is not a tenant ID")
	_, err = run("usage", "-group-by", "week")
	require.ErrorContains(t, err, `unknown groupBy "week"`)
	_, err = run("tenant", "frobnicate")
	require.ErrorContains(t, err, "use spawn, list, status, logs, destroy, keys list, keys rotate, keys revoke")
	_, err = run("org", "list", "-o", "yaml")
	require.ErrorContains(t, err, "use table or json")
}

// field returns the value of a "HEADER  value" line of a vertical table.
func field(t *testing.T, out, header string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, header); ok && strings.HasPrefix(rest, " ") {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("no %q line in:\n%s", header, out)
	return ""
}
