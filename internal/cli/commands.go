package cli

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
var tenantColumns = []column{
	{"ENV ID", "envId"}, {"NAME", "name"}, {"ORG", "orgId"}, {"STATUS", "status"},
	{"HEALTH", "health"}, {"PORT", "port"}, {"IMAGE", "image"}, {"EGRESS", "egress"}, {"CREATED", "createdAt"},
}

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
		body := map[string]any{"name": name}
		if *org != 0 {
			body["orgId"] = *org
		}
		for k, v := range map[string]string{"language": *language, "framework": *framework, "image": *image, "egress": *egress} {
			if v != "" {
				body[k] = v
			}
		}
		q := url.Values{}
		if *async {
			q.Set("async", "true")
		}
		raw, err := c.do(http.MethodPost, "/api/v1/tenant/spawn", q, body)
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error {
			if err := vertical(c.out, object(a, "tenant"), append(tenantColumns, column{"API KEY", "apiKey"})); err != nil {
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
		return c.print(raw, func(a map[string]any) error { return page(c.out, a, "tenants", tenantColumns) })
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
		return c.print(raw, func(a map[string]any) error {
			return vertical(c.out, object(a, "tenant"), append(tenantColumns,
				column{"REASON", "reason"},
				column{"CONTAINER", "container.state"},
				column{"CPU %", "container.cpuPercent"},
				column{"MEMORY BYTES", "container.memoryBytes"},
				column{"MEMORY LIMIT", "container.memoryLimitBytes"},
				column{"RESTARTS", "container.restartCount"},
				column{"UPTIME S", "container.uptimeSeconds"},
			))
		})
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
		return c.print(raw, func(a map[string]any) error {
			return vertical(c.out, object(a, "tenant"), tenantColumns)
		})
	}
}

var orgColumns = []column{
	{"ORG ID", "orgId"}, {"NAME", "name"}, {"PLAN", "plan"}, {"TENANTS", "liveTenants"},
	{"MAX TENANTS", "maxTenants"}, {"TASKS IN FLIGHT", "tasksInFlight"}, {"CREATED", "createdAt"},
}

func orgCreate(fs *flag.FlagSet) func(*caller, []string) error {
	plan := fs.String("plan", "", "plan: free (default), pro, enterprise, unlimited, or one of the plan file's")
	maxTenants := fs.Int("max-tenants", -1, "most live tenants the organization may have, in place of its plan's")
	return func(c *caller, args []string) error {
		name, err := oneArg(args, "NAME")
		if err != nil {
			return err
		}
		body := map[string]any{"name": name}
		if *plan != "" {
			body["plan"] = *plan
		}
		if *maxTenants >= 0 {
			body["maxTenants"] = *maxTenants
		}
		raw, err := c.do(http.MethodPost, "/api/v1/orgs", nil, body)
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error {
			return vertical(c.out, object(a, "organization"), orgColumns)
		})
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
		body := map[string]any{}
		if *plan != "" {
			body["plan"] = *plan
		}
		switch n, err := strconv.Atoi(*maxTenants); {
		case *maxTenants == "":
		case *maxTenants == "plan":
			body["maxTenants"] = nil
		case err != nil:
			return fmt.Errorf(`-max-tenants %q: give a number, or "plan" for the plan's quota`, *maxTenants)
		default:
			body["maxTenants"] = n
		}
		raw, err := c.do(http.MethodPatch, "/api/v1/orgs/"+url.PathEscape(id), nil, body)
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error {
			if err := vertical(c.out, object(a, "organization"), orgColumns); err != nil {
				return err
			}
			return message(c.out, a)
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
		return c.print(raw, func(a map[string]any) error { return page(c.out, a, "organizations", orgColumns) })
	}
}

// usageColumns are the totals of a usage row; group columns come before them.
var usageColumns = []column{
	{"CALLS", "usage.calls"}, {"TASKS", "usage.tasks"}, {"INPUT", "usage.inputTokens"},
	{"OUTPUT", "usage.outputTokens"}, {"CACHED", "usage.cachedTokens"}, {"TOTAL", "usage.totalTokens"},
	{"CONTAINER S", "usage.containerSeconds"}, {"COST", "usage.cost"}, {"AVG SCORE", "usage.averageConvergenceScore"},
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
		return c.print(raw, func(a map[string]any) error {
			var cols []column
			for _, g := range []column{{"ORG", "orgId"}, {"TENANT", "envId"}, {"PROVIDER", "provider"}, {"MODEL", "model"}, {"DAY", "day"}, {"MONTH", "month"}} {
				if groupedBy(a, g.key) {
					cols = append(cols, g)
				}
			}
			rows := list(a, "groups")
			if len(cols) == 0 {
				rows = nil // Ungrouped: the totals are the answer.
				cols = []column{{"", "label"}}
			}
			rows = append(rows, map[string]any{cols[0].key: "TOTAL", "usage": a["totals"]})
			if _, err := fmt.Fprintf(c.out, "Usage %v to %v (%v)\n\n", a["from"], a["to"], a["currency"]); err != nil {
				return err
			}
			return table(c.out, rows, append(cols, usageColumns...))
		})
	}
}

// groupedBy reports whether a usage answer is grouped by the dimension whose row key is key.
func groupedBy(a map[string]any, key string) bool {
	dims := map[string][]string{"orgId": {"organization"}, "envId": {"tenant"}, "provider": {"model"}, "model": {"model"}, "day": {"day"}, "month": {"month"}}
	groups, _ := a["groupBy"].([]any)
	for _, g := range groups {
		for _, d := range dims[key] {
			if g == d {
				return true
			}
		}
	}
	return false
}

var budgetColumns = []column{
	{"ORG ID", "orgId"}, {"ENV ID", "envId"}, {"MONTHLY LIMIT", "monthlySpendLimit"}, {"SOURCE", "source"}, {"ALERT AT", "alertAt"},
	{"MONTH", "month"}, {"CURRENCY", "currency"}, {"SPENT", "spent"}, {"RESERVED", "reserved"}, {"REMAINING", "remaining"},
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
				put := map[string]any{"monthlySpendLimit": *set}
				if *set == "none" {
					put["monthlySpendLimit"] = nil
				}
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
					put["alertAt"] = fractions
				}
			}
			raw, err := c.do(method, "/api/v1/"+path+"/"+url.PathEscape(id)+"/budget", nil, body)
			if err != nil {
				return err
			}
			return c.print(raw, func(a map[string]any) error {
				return vertical(c.out, object(a, "budget"), budgetColumns)
			})
		}
	}
}
