package cli

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/convergence-dev/convergence/pkg/api"
)

// commands are the tenant, org and invoice subcommands, in the order help lists them.
var commands = append([]command{
	{group: "tenant", name: "spawn", usage: "NAME [-org ID] [-language L] [-framework F] [-image IMAGE] [-egress platform|internet|none] [-async]", flags: tenantSpawn},
	{group: "tenant", name: "list", usage: "[-org ID] [-status S|all] [-limit N] [-cursor C]", flags: tenantList},
	{group: "tenant", name: "status", usage: "ENV_ID", flags: tenantStatus},
	{group: "tenant", name: "logs", usage: "ENV_ID [-tail N] [-since TIME] [-follow]", flags: tenantLogs},
	{group: "tenant", name: "destroy", usage: "ENV_ID [-async]", flags: tenantDestroy},
	{group: "tenant", name: "keys list", usage: "ENV_ID [-limit N] [-cursor C]", flags: keysList},
	{group: "tenant", name: "keys rotate", usage: "ENV_ID [-overlap 24h]", flags: keysRotate},
	{group: "tenant", name: "keys revoke", usage: "ENV_ID KEY_ID", flags: keysRevoke},
	{group: "tenant", name: "budget", usage: "ENV_ID [-set AMOUNT|none] [-alert-at 0.5,0.8,1]", flags: budget("tenant")},
	{group: "org", name: "create", usage: "NAME [-plan P] [-max-tenants N]", flags: orgCreate},
	{group: "org", name: "list", usage: "", flags: orgList},
	{group: "org", name: "update", usage: "ORG_ID [-plan P] [-max-tenants N]", flags: orgUpdate},
	{group: "org", name: "budget", usage: "ORG_ID [-set AMOUNT|none] [-alert-at 0.5,0.8,1]", flags: budget("orgs")},
}, invoiceCommands...)

var usageCommand = command{group: "usage", usage: "[-from DAY] [-to DAY] [-group-by organization,tenant,model,day|month] [-org ID] [-tenant ENV_ID]", flags: usage}

// tenantColumns are what a tenant row shows.
var tenantColumns = []column[api.Tenant]{
	{"ENV ID", func(t api.Tenant) any { return t.EnvID }},
	{"NAME", func(t api.Tenant) any { return t.Name }},
	{"ORG", func(t api.Tenant) any { return t.OrgID }},
	{"STATUS", func(t api.Tenant) any { return t.Status }},
	{"HEALTH", func(t api.Tenant) any { return t.Health }},
	{"PORT", func(t api.Tenant) any { return t.Port }},
	{"IMAGE", func(t api.Tenant) any { return t.Image }},
	{"EGRESS", func(t api.Tenant) any { return t.Egress }},
	{"CREATED", func(t api.Tenant) any { return t.CreatedAt }},
}

// tenantStatusColumns add the container's live state.
var tenantStatusColumns = append(slices.Clone(tenantColumns),
	column[api.Tenant]{"REASON", func(t api.Tenant) any { return t.Reason }},
	column[api.Tenant]{"CONTAINER", func(t api.Tenant) any { return t.Container.State }},
	column[api.Tenant]{"CPU %", func(t api.Tenant) any { return t.Container.CPUPercent }},
	column[api.Tenant]{"MEMORY BYTES", func(t api.Tenant) any { return t.Container.MemoryBytes }},
	column[api.Tenant]{"MEMORY LIMIT", func(t api.Tenant) any { return t.Container.MemoryLimitBytes }},
	column[api.Tenant]{"RESTARTS", func(t api.Tenant) any { return t.Container.RestartCount }},
	column[api.Tenant]{"UPTIME S", func(t api.Tenant) any { return t.Container.UptimeSeconds }},
)

// oneArg checks that args is exactly one positional argument, named what.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("give exactly one %s", what)
	}
	return args[0], nil
}

func envIDArg(args []string) (string, error) {
	id, err := oneArg(args, "ENV_ID")
	if err != nil {
		return "", err
	}
	if n, err := strconv.ParseInt(id, 10, 64); err != nil || n <= 0 {
		return "", fmt.Errorf("ENV_ID %q is not a tenant ID: use the number tenant list shows", id)
	}
	return id, nil
}

func tenantSpawn(fs *flag.FlagSet) func(*caller, []string) error {
	org := fs.Int64("org", 0, "organization ID (default: the default organization)")
	language := fs.String("language", "", "template language (default go)")
	framework := fs.String("framework", "", "template framework")
	image := fs.String("image", "", "a local image to run instead of a template")
	egress := fs.String("egress", "", "what the tenant may reach: platform (the API only; the default), internet (and the public internet), none")
	async := fs.Bool("async", false, "answer at once, while the tenant is still provisioning")
	return func(c *caller, args []string) error {
		name, err := oneArg(args, "NAME")
		if err != nil {
			return err
		}
		body := api.SpawnRequest{Name: name, Language: *language, Framework: *framework, Image: *image, Egress: *egress}
		if *org != 0 {
			body.OrgID = org
		}
		q := url.Values{}
		if *async {
			q.Set("async", "true")
		}
		raw, err := c.do(http.MethodPost, "/api/v1/tenant/spawn", q, body)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.TenantAnswer) error {
			withKey := append(slices.Clone(tenantColumns), column[api.Tenant]{"API KEY", func(t api.Tenant) any { return t.APIKey }})
			if err := vertical(c.out, a.Tenant, withKey); err != nil {
				return err
			}
			_, err := fmt.Fprintln(c.out, "\nThe API key is shown only now: give it to the tenant's developers.")
			return err
		})
	}
}

func tenantList(fs *flag.FlagSet) func(*caller, []string) error {
	org := fs.Int64("org", 0, "only this organization's tenants")
	status := fs.String("status", "", "only tenants in this state; all includes destroyed ones")
	paging := pageFlags(fs)
	return func(c *caller, args []string) error {
		if len(args) != 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		q := url.Values{}
		if *org != 0 {
			q.Set("orgId", strconv.FormatInt(*org, 10))
		}
		if *status != "" {
			q.Set("status", *status)
		}
		raw, err := c.do(http.MethodGet, "/api/v1/tenant", paging(q), nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.TenantList) error { return page(c.out, a.Tenants, a.NextCursor, tenantColumns) })
	}
}

func tenantStatus(fs *flag.FlagSet) func(*caller, []string) error {
	return func(c *caller, args []string) error {
		id, err := envIDArg(args)
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodGet, "/api/v1/tenant/"+id+"/status", nil, nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.TenantAnswer) error { return vertical(c.out, a.Tenant, tenantStatusColumns) })
	}
}

func tenantLogs(fs *flag.FlagSet) func(*caller, []string) error {
	tail := fs.Int("tail", 100, "lines from the end")
	since := fs.String("since", "", "only lines after this time (RFC 3339) or duration ago (10m)")
	follow := fs.Bool("follow", false, "keep streaming new lines until interrupted")
	return func(c *caller, args []string) error {
		id, err := envIDArg(args)
		if err != nil {
			return err
		}
		q := url.Values{"tail": {strconv.Itoa(*tail)}}
		if *since != "" {
			q.Set("since", *since)
		}
		if *follow {
			q.Set("follow", "true")
		}
		resp, err := c.send(http.MethodGet, "/api/v1/tenant/"+id+"/logs", q, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			return decodeError(resp, raw)
		}
		_, err = io.Copy(c.out, resp.Body)
		if c.ctx.Err() != nil {
			return nil // Interrupted while following: the usual way to stop.
		}
		return err
	}
}

func tenantDestroy(fs *flag.FlagSet) func(*caller, []string) error {
	async := fs.Bool("async", false, "answer at once, while the tenant is still being removed")
	return func(c *caller, args []string) error {
		id, err := envIDArg(args)
		if err != nil {
			return err
		}
		q := url.Values{}
		if *async {
			q.Set("async", "true")
		}
		raw, err := c.do(http.MethodDelete, "/api/v1/tenant/"+id, q, nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.TenantAnswer) error { return vertical(c.out, a.Tenant, tenantColumns) })
	}
}

var orgColumns = []column[api.Org]{
	{"ORG ID", func(o api.Org) any { return o.OrgID }},
	{"NAME", func(o api.Org) any { return o.Name }},
	{"PLAN", func(o api.Org) any { return o.Plan }},
	{"TENANTS", func(o api.Org) any { return o.LiveTenants }},
	{"MAX TENANTS", func(o api.Org) any { return o.MaxTenants }},
	{"TASKS IN FLIGHT", func(o api.Org) any { return o.TasksInFlight }},
	{"CREATED", func(o api.Org) any { return o.CreatedAt }},
}

func orgCreate(fs *flag.FlagSet) func(*caller, []string) error {
	plan := fs.String("plan", "", "plan: free (default), pro, enterprise, unlimited, or one of the plan file's")
	maxTenants := fs.Int("max-tenants", -1, "most live tenants the organization may have, in place of its plan's")
	return func(c *caller, args []string) error {
		name, err := oneArg(args, "NAME")
		if err != nil {
			return err
		}
		body := api.CreateOrgJSONBody{Name: name, Plan: *plan}
		if *maxTenants >= 0 {
			body.MaxTenants = maxTenants
		}
		raw, err := c.do(http.MethodPost, "/api/v1/orgs", nil, body)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.OrgAnswer) error { return vertical(c.out, a.Organization, orgColumns) })
	}
}

func orgUpdate(fs *flag.FlagSet) func(*caller, []string) error {
	plan := fs.String("plan", "", "the new plan")
	maxTenants := fs.String("max-tenants", "", `the new most live tenants the organization may have, or "plan" for its plan's`)
	return func(c *caller, args []string) error {
		id, err := oneArg(args, "ORG_ID")
		if err != nil {
			return err
		}
		var body api.UpdateOrgJSONBody
		if *plan != "" {
			body.Plan = plan
		}
		switch n, err := strconv.Atoi(*maxTenants); {
		case *maxTenants == "":
		case *maxTenants == "plan":
			body.MaxTenants = json.RawMessage("null")
		case err != nil:
			return fmt.Errorf(`-max-tenants %q: give a number, or "plan" for the plan's quota`, *maxTenants)
		default:
			body.MaxTenants = json.RawMessage(strconv.Itoa(n))
		}
		raw, err := c.do(http.MethodPatch, "/api/v1/orgs/"+url.PathEscape(id), nil, body)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.OrgAnswer) error {
			if err := vertical(c.out, a.Organization, orgColumns); err != nil {
				return err
			}
			return message(c.out, a.Message)
		})
	}
}

func orgList(*flag.FlagSet) func(*caller, []string) error {
	return func(c *caller, args []string) error {
		if len(args) != 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		raw, err := c.do(http.MethodGet, "/api/v1/orgs", nil, nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.OrgList) error { return page(c.out, a.Organizations, a.NextCursor, orgColumns) })
	}
}

// usageGroup is a row of a usage table: a group, or the totals (Label TOTAL).
type usageGroup struct {
	api.UsageGroup
	Label string
}

// usageColumns are the totals of a usage row; group columns come before them.
var usageColumns = []column[usageGroup]{
	{"CALLS", func(g usageGroup) any { return g.Usage.Calls }},
	{"TASKS", func(g usageGroup) any { return g.Usage.Tasks }},
	{"INPUT", func(g usageGroup) any { return g.Usage.InputTokens }},
	{"OUTPUT", func(g usageGroup) any { return g.Usage.OutputTokens }},
	{"CACHED", func(g usageGroup) any { return g.Usage.CachedTokens }},
	{"TOTAL", func(g usageGroup) any { return g.Usage.TotalTokens }},
	{"CONTAINER S", func(g usageGroup) any { return g.Usage.ContainerSeconds }},
	{"COST", func(g usageGroup) any { return g.Usage.Cost }},
	{"AVG SCORE", func(g usageGroup) any { return g.Usage.AverageConvergenceScore }},
}

// usageGroupColumns are the group columns, each with the groupBy dimension that makes it.
var usageGroupColumns = []struct {
	dimension string
	column[usageGroup]
}{
	{"organization", column[usageGroup]{"ORG", func(g usageGroup) any { return g.OrgID }}},
	{"tenant", column[usageGroup]{"TENANT", func(g usageGroup) any { return g.EnvID }}},
	{"model", column[usageGroup]{"PROVIDER", func(g usageGroup) any { return g.Provider }}},
	{"model", column[usageGroup]{"MODEL", func(g usageGroup) any { return g.Model }}},
	{"day", column[usageGroup]{"DAY", func(g usageGroup) any { return g.Day }}},
	{"month", column[usageGroup]{"MONTH", func(g usageGroup) any { return g.Month }}},
}

// labelled is cols with the totals row's label in the first column and nothing in the others.
func labelled(cols []column[usageGroup]) []column[usageGroup] {
	out := make([]column[usageGroup], len(cols))
	for i, c := range cols {
		out[i] = column[usageGroup]{c.header, func(g usageGroup) any {
			switch {
			case g.Label == "":
				return c.value(g)
			case i == 0:
				return g.Label
			default:
				return nil
			}
		}}
	}
	return out
}

func usage(fs *flag.FlagSet) func(*caller, []string) error {
	from := fs.String("from", "", "first day, YYYY-MM-DD (default: the first of this month)")
	to := fs.String("to", "", "last day, YYYY-MM-DD (default: today)")
	groupBy := fs.String("group-by", "", "comma list of organization, tenant, model, day or month")
	org := fs.Int64("org", 0, "only this organization")
	tenant := fs.Int64("tenant", 0, "only this tenant")
	return func(c *caller, args []string) error {
		if len(args) != 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		q := url.Values{}
		for k, v := range map[string]string{"from": *from, "to": *to, "groupBy": *groupBy} {
			if v != "" {
				q.Set(k, v)
			}
		}
		path := "/api/v1/usage"
		if *tenant != 0 {
			path = "/api/v1/tenant/" + strconv.FormatInt(*tenant, 10) + "/usage"
		} else if *org != 0 {
			q.Set("orgId", strconv.FormatInt(*org, 10))
		}
		raw, err := c.do(http.MethodGet, path, q, nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.UsageSummary) error {
			var cols []column[usageGroup]
			for _, g := range usageGroupColumns {
				if slices.Contains(a.GroupBy, g.dimension) {
					cols = append(cols, g.column)
				}
			}
			var rows []usageGroup
			for _, g := range a.Groups {
				rows = append(rows, usageGroup{UsageGroup: g})
			}
			if len(cols) == 0 { // Ungrouped: the totals are the answer.
				cols = []column[usageGroup]{{"", func(usageGroup) any { return nil }}}
			}
			cols = labelled(cols)
			rows = append(rows, usageGroup{UsageGroup: api.UsageGroup{Usage: a.Totals}, Label: "TOTAL"})
			if _, err := fmt.Fprintf(c.out, "Usage %v to %v (%v)\n\n", a.From, a.To, a.Currency); err != nil {
				return err
			}
			return table(c.out, rows, append(cols, usageColumns...))
		})
	}
}

var budgetColumns = []column[api.Budget]{
	{"ORG ID", func(b api.Budget) any { return b.OrgID }},
	{"ENV ID", func(b api.Budget) any {
		if b.EnvID == 0 {
			return nil
		}
		return b.EnvID
	}},
	{"MONTHLY LIMIT", func(b api.Budget) any { return b.MonthlySpendLimit }},
	{"SOURCE", func(b api.Budget) any { return b.Source }},
	{"ALERT AT", func(b api.Budget) any { return b.AlertAt }},
	{"MONTH", func(b api.Budget) any { return b.Month }},
	{"CURRENCY", func(b api.Budget) any { return b.Currency }},
	{"SPENT", func(b api.Budget) any { return b.Spent }},
	{"RESERVED", func(b api.Budget) any { return b.Reserved }},
	{"REMAINING", func(b api.Budget) any { return b.Remaining }},
}

// budget shows an organization's or a tenant's budget (path "orgs" or "tenant"), or sets it
// with -set: an amount, or "none" to remove it.
func budget(path string) func(fs *flag.FlagSet) func(*caller, []string) error {
	return func(fs *flag.FlagSet) func(*caller, []string) error {
		set := fs.String("set", "", `the new monthly spend limit in currency units ("5.00"), or "none" to remove it`)
		alertAt := fs.String("alert-at", "", "with -set: fractions of the limit to alert at, comma separated (0.5,0.8,1)")
		return func(c *caller, args []string) error {
			id, err := oneArg(args, "ID")
			if err != nil {
				return err
			}
			method, body := http.MethodGet, any(nil)
			if *set != "" {
				limit, _ := json.Marshal(*set)
				if *set == "none" {
					limit = []byte("null")
				}
				put := &api.BudgetRequest{MonthlySpendLimit: limit}
				method, body = http.MethodPut, put
				if *alertAt != "" {
					var fractions []float64
					for _, f := range strings.Split(*alertAt, ",") {
						v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
						if err != nil {
							return fmt.Errorf("-alert-at %q: give fractions of the limit such as 0.5,0.8,1", *alertAt)
						}
						fractions = append(fractions, v)
					}
					put.AlertAt = fractions
				}
			}
			raw, err := c.do(method, "/api/v1/"+path+"/"+url.PathEscape(id)+"/budget", nil, body)
			if err != nil {
				return err
			}
			return show(c, raw, func(a api.BudgetAnswer) error { return vertical(c.out, a.Budget, budgetColumns) })
		}
	}
}
