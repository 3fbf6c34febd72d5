// Package grafana holds the platform's Grafana dashboards as code: overview, tenants,
// convergence, metering and bus. Each is data (a title, panels, PromQL queries) that Render
// turns into the JSON Grafana loads; `make dashboards` writes it into dashboards/, which the
// provisioning files in provisioning/ point a Grafana at. The tests check that the files are
// what Render makes, that every query parses (with promtool), and, in internal/e2e, that
// every metric a query names is one a running platform serves after a whole flow.
package grafana

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Board is one dashboard.
type Board struct {
	// File is the JSON file's name in dashboards/; UID is Grafana's id of the dashboard.
	File, UID, Title, Description string
	Panels                        []Panel
}

// Panel is a time series graph, or a single figure when Stat is set.
type Panel struct {
	Title, Description string
	// Unit is a Grafana unit: "reqps", "s", "percentunit", "short", "bytes" ...
	Unit    string
	Stat    bool
	Queries []Query
}

// Query is a PromQL expression, with the legend of its series.
type Query struct{ Expr, Legend string }

// rate is the range of the rates in queries: Grafana's own, at least four scrapes.
const rate = "[$__rate_interval]"

// Boards returns the dashboards.
func Boards() []Board {
	return []Board{overview(), tenants(), convergence(), metering(), bus()}
}

func overview() Board {
	return Board{
		File: "overview.json", UID: "convergence-overview", Title: "Convergence / Overview",
		Description: "Is the platform up, answering, and keeping up: requests, errors, latency, readiness, tenants and tasks.",
		Panels: []Panel{
			{Title: "Readiness checks failing", Unit: "short", Stat: true,
				Description: "Checks (database, NATS, Docker, the services' own) that failed at the last scrape; 0 is healthy.",
				Queries:     []Query{{`count(convergence_check_up == 0) or vector(0)`, "failing"}}},
			{Title: "Tenants running", Unit: "short", Stat: true,
				Queries: []Query{{`sum(convergence_provisioner_tenants{status="running"})`, "running"}}},
			{Title: "Tasks in flight", Unit: "short", Stat: true,
				Queries: []Query{{`sum(convergence_converger_tasks_in_flight)`, "tasks"}}},
			{Title: "API 5xx ratio", Unit: "percentunit", Stat: true,
				Queries: []Query{{`sum(rate(convergence_http_requests_total{code="5xx"}` + rate + `)) / sum(rate(convergence_http_requests_total` + rate + `))`, "5xx"}}},
			{Title: "API requests by status class", Unit: "reqps",
				Queries: []Query{{`sum by (code) (rate(convergence_http_requests_total` + rate + `))`, "{{code}}"}}},
			{Title: "API latency", Unit: "s",
				Description: "Quantiles over every route; the convergence routes wait for whole tasks when called synchronously.",
				Queries: []Query{
					{`histogram_quantile(0.5, sum by (le) (rate(convergence_http_request_duration_seconds_bucket` + rate + `)))`, "p50"},
					{`histogram_quantile(0.99, sum by (le) (rate(convergence_http_request_duration_seconds_bucket` + rate + `)))`, "p99"},
				}},
			{Title: "Readiness checks", Unit: "short",
				Queries: []Query{{`min by (check) (convergence_check_up)`, "{{check}}"}}},
			{Title: "LLM calls by outcome", Unit: "reqps",
				Queries: []Query{{`sum by (outcome) (rate(convergence_llm_requests_total` + rate + `))`, "{{outcome}}"}}},
		},
	}
}

func tenants() Board {
	return Board{
		File: "tenants.json", UID: "convergence-tenants", Title: "Convergence / Tenants",
		Description: "The provisioner: tenants by state, spawns, state changes and what the reconciler repaired.",
		Panels: []Panel{
			{Title: "Tenants by status", Unit: "short",
				Description: "As of the last reconcile pass; destroyed tenants are not counted.",
				Queries:     []Query{{`sum by (status) (convergence_provisioner_tenants)`, "{{status}}"}}},
			{Title: "State changes", Unit: "ops",
				Queries: []Query{{`sum by (state) (rate(convergence_provisioner_lifecycle_transitions_total` + rate + `))`, "{{state}}"}}},
			{Title: "Spawn time", Unit: "s",
				Description: "From taking a spawn to running (or error), health check included.",
				Queries: []Query{
					{`histogram_quantile(0.5, sum by (le, outcome) (rate(convergence_provisioner_spawn_duration_seconds_bucket` + rate + `)))`, "p50 {{outcome}}"},
					{`histogram_quantile(0.95, sum by (le, outcome) (rate(convergence_provisioner_spawn_duration_seconds_bucket` + rate + `)))`, "p95 {{outcome}}"},
				}},
			{Title: "Reconciler repairs", Unit: "ops",
				Description: "Anything but zero is a gap the reconciler closed: a lost command, an orphan, a stuck tenant.",
				Queries:     []Query{{`sum by (action) (rate(convergence_provisioner_reconcile_actions_total` + rate + `))`, "{{action}}"}}},
			{Title: "Reconcile pass time", Unit: "s",
				Queries: []Query{{`histogram_quantile(0.99, sum by (le) (rate(convergence_provisioner_reconcile_duration_seconds_bucket` + rate + `)))`, "p99"}}},
			{Title: "Leader", Unit: "short",
				Description: "The replica that watches health and reconciles: 1 while an instance leads. One line at 1 at a time; a change is a failover.",
				Queries:     []Query{{`max by (instance) (convergence_leader{role="provisioner"})`, "{{instance}}"}}},
			{Title: "Duplicate tenant networks removed", Unit: "short",
				Queries: []Query{{`sum(increase(convergence_provisioner_duplicate_networks_removed_total` + rate + `))`, "removed"}}},
		},
	}
}

func convergence() Board {
	return Board{
		File: "convergence.json", UID: "convergence-convergence", Title: "Convergence / Convergence",
		Description: "The converger: tasks, their outcomes and time, tokens, the LLM provider, webhooks.",
		Panels: []Panel{
			{Title: "Tasks finished by status", Unit: "ops",
				Queries: []Query{{`sum by (status) (rate(convergence_converger_tasks_finished_total` + rate + `))`, "{{status}}"}}},
			{Title: "Tasks finished by stop reason", Unit: "ops",
				Queries: []Query{{`sum by (stop_reason) (rate(convergence_converger_tasks_finished_total` + rate + `))`, "{{stop_reason}}"}}},
			{Title: "Task time", Unit: "s",
				Description: "From a task's first start to its end.",
				Queries: []Query{
					{`histogram_quantile(0.5, sum by (le) (rate(convergence_converger_task_duration_seconds_bucket` + rate + `)))`, "p50"},
					{`histogram_quantile(0.95, sum by (le) (rate(convergence_converger_task_duration_seconds_bucket` + rate + `)))`, "p95"},
				}},
			{Title: "Tasks in flight, waiting, and rounds", Unit: "short",
				Description: "Waiting: tasks a converger holds for their turn (tenants take turns); many means the converger is saturated.",
				Queries: []Query{
					{`sum(convergence_converger_tasks_in_flight)`, "in flight"},
					{`sum(convergence_converger_tasks_waiting)`, "waiting"},
					{`sum(rate(convergence_converger_rounds_total` + rate + `))`, "rounds/s"},
				}},
			{Title: "Tokens billed", Unit: "short",
				Description: "Tokens per second of finished tasks, by kind.",
				Queries:     []Query{{`sum by (kind) (rate(convergence_converger_tokens_total` + rate + `))`, "{{kind}}"}}},
			{Title: "LLM call latency", Unit: "s",
				Queries: []Query{{`histogram_quantile(0.95, sum by (le, provider, model) (rate(convergence_llm_request_duration_seconds_bucket` + rate + `)))`, "p95 {{provider}} {{model}}"}}},
			{Title: "LLM error ratio", Unit: "percentunit",
				Queries: []Query{{`sum by (provider) (rate(convergence_llm_requests_total{outcome!="ok"}` + rate + `)) / sum by (provider) (rate(convergence_llm_requests_total` + rate + `))`, "{{provider}}"}}},
			{Title: "Webhook deliveries", Unit: "ops",
				Queries: []Query{
					{`sum by (outcome) (rate(convergence_webhook_attempts_total` + rate + `))`, "{{outcome}}"},
					{`histogram_quantile(0.95, sum by (le) (rate(convergence_webhook_attempt_duration_seconds_bucket` + rate + `)))`, "p95 attempt time (s)"},
				}},
			{Title: "Requests skipped", Unit: "ops",
				Description: "Redelivered requests whose task had already finished: acknowledged without a provider call.",
				Queries:     []Query{{`sum(rate(convergence_converger_requests_skipped_total` + rate + `))`, "skipped"}}},
		},
	}
}

func metering() Board {
	return Board{
		File: "metering.json", UID: "convergence-metering", Title: "Convergence / Metering and billing",
		Description: "What is billed: source events, ledger lines, refused results, unpriced usage, budget reservations, rollups.",
		Panels: []Panel{
			{Title: "Results refused", Unit: "short", Stat: true,
				Description: "Convergence results not billed because the converger's records do not vouch for them: forged or replayed usage (alert ForgedUsageRefused).",
				Queries:     []Query{{`sum(increase(convergence_metering_results_refused_total[$__range]))`, "refused"}}},
			{Title: "Models unpriced", Unit: "short", Stat: true,
				Description: "Models with usage the price table does not price; GET /api/v1/usage/unpriced lists them.",
				Queries:     []Query{{`max(convergence_metering_unpriced_models)`, "models"}}},
			{Title: "Unreconciled tasks", Unit: "short", Stat: true,
				Description: "Tasks of yesterday and today on which the last hourly check found the ledger and the converger's records apart (alert UsageUnreconciled); convergence reconcile lists them.",
				Queries:     []Query{{`sum(max by (kind) (convergence_metering_reconcile_gaps))`, "tasks"}}},
			{Title: "Price version", Unit: "none", Stat: true,
				Queries: []Query{{`max(convergence_metering_price_version)`, "version"}}},
			{Title: "Rollup merge errors", Unit: "short", Stat: true,
				Queries: []Query{{`sum(increase(convergence_metering_rollup_merge_errors_total[$__range]))`, "errors"}}},
			{Title: "Source events by outcome", Unit: "ops",
				Queries: []Query{{`sum by (source, outcome) (rate(convergence_metering_events_total` + rate + `))`, "{{source}} {{outcome}}"}}},
			{Title: "Ledger lines written", Unit: "ops",
				Queries: []Query{{`sum by (source) (rate(convergence_metering_ledger_lines_total` + rate + `))`, "{{source}}"}}},
			{Title: "Results refused by reason", Unit: "ops",
				Queries: []Query{{`sum by (reason) (rate(convergence_metering_results_refused_total` + rate + `))`, "{{reason}}"}}},
			{Title: "Unpriced usage", Unit: "short",
				Queries: []Query{
					{`sum(rate(convergence_metering_unpriced_lines_total` + rate + `))`, "lines/s"},
					{`sum(rate(convergence_metering_unpriced_tokens_total` + rate + `))`, "tokens/s"},
				}},
			{Title: "Ingest batches", Unit: "s",
				Queries: []Query{
					{`histogram_quantile(0.95, sum by (le, source) (rate(convergence_metering_batch_duration_seconds_bucket` + rate + `)))`, "p95 time {{source}}"},
					{`histogram_quantile(0.5, sum by (le, source) (rate(convergence_metering_batch_messages_bucket` + rate + `)))`, "p50 size {{source}} (messages)"},
				}},
			{Title: "Budget reservations", Unit: "ops",
				Description: "Runs' worst cases reserved against budgets, refused (402 budget_exceeded, alert RunsRefusedForBudget) and given back.",
				Queries:     []Query{{`sum by (outcome) (rate(convergence_metering_budget_reservations_total` + rate + `))`, "{{outcome}}"}}},
			{Title: "Rollup merges", Unit: "s",
				Queries: []Query{
					{`histogram_quantile(0.95, sum by (le) (rate(convergence_metering_rollup_merge_duration_seconds_bucket` + rate + `)))`, "p95 merge time"},
					{`sum(rate(convergence_metering_rollup_merged_rows_total` + rate + `))`, "rows merged/s"},
				}},
			{Title: "Leader", Unit: "short",
				Description: "The replica that merges the rollups and checks the reconciliation: 1 while an instance leads. One line at 1 at a time; a change is a failover.",
				Queries:     []Query{{`max by (instance) (convergence_leader{role="metering"})`, "{{instance}}"}}},
		},
	}
}

func bus() Board {
	return Board{
		File: "bus.json", UID: "convergence-bus", Title: "Convergence / Bus",
		Description: "Events between the services: the outboxes that send them, the consumers that take them, what is dead-lettered.",
		Panels: []Panel{
			{Title: "Dead-lettered", Unit: "short", Stat: true,
				Description: "Messages given up on in the selected range; each is in the dead-letter stream.",
				Queries:     []Query{{`sum(increase(convergence_consumer_messages_total{outcome="dead_lettered"}[$__range]))`, "dead-lettered"}}},
			{Title: "Outbox publish errors", Unit: "short", Stat: true,
				Queries: []Query{{`sum(increase(convergence_outbox_publish_errors_total[$__range]))`, "errors"}}},
			{Title: "Consumer messages by outcome", Unit: "ops",
				Queries: []Query{{`sum by (consumer, outcome) (rate(convergence_consumer_messages_total` + rate + `))`, "{{consumer}} {{outcome}}"}}},
			{Title: "Consumer backlog", Unit: "short",
				Description: "Messages each consumer has yet to deliver, and those it delivered but not yet acknowledged, as JetStream counts them; replicas of a service report the same consumer.",
				Queries: []Query{
					{`max by (consumer) (convergence_consumer_pending_messages)`, "pending {{consumer}}"},
					{`max by (consumer) (convergence_consumer_ack_pending_messages)`, "unacknowledged {{consumer}}"},
				}},
			{Title: "Consumer handling time", Unit: "s",
				Queries: []Query{{`histogram_quantile(0.95, sum by (le, consumer) (rate(convergence_consumer_handle_duration_seconds_bucket` + rate + `)))`, "p95 {{consumer}}"}}},
			{Title: "Outbox events published", Unit: "ops",
				Queries: []Query{{`sum by (service) (rate(convergence_outbox_published_total` + rate + `))`, "{{service}}"}}},
			{Title: "Outbox relay lag", Unit: "s",
				Description: "From an event's commit to JetStream's acknowledgement of its publish.",
				Queries: []Query{
					{`histogram_quantile(0.5, sum by (le, service) (rate(convergence_outbox_relay_lag_seconds_bucket` + rate + `)))`, "p50 {{service}}"},
					{`histogram_quantile(0.99, sum by (le, service) (rate(convergence_outbox_relay_lag_seconds_bucket` + rate + `)))`, "p99 {{service}}"},
				}},
		},
	}
}

// Metrics returns the names of the metrics the dashboards' queries name, sorted, each once
// (a histogram's as its _bucket series).
func Metrics() []string {
	seen := map[string]bool{}
	for _, b := range Boards() {
		for _, p := range b.Panels {
			for _, q := range p.Queries {
				for _, name := range metricName.FindAllString(q.Expr, -1) {
					seen[name] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

var metricName = regexp.MustCompile(`\bconvergence_[a-z0-9_]+`)

// Render returns each dashboard's JSON by file name.
func Render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, b := range Boards() {
		d, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.Title, err)
		}
		j, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.Title, err)
		}
		out[b.File] = append(j, '\n')
	}
	return out, nil
}

// Markdown lists the dashboards, their panels and queries, for deploy/grafana/README.md.
func Markdown() []byte {
	var b strings.Builder
	b.WriteString("# deploy/grafana\n\n")
	b.WriteString("The platform's Grafana dashboards, made by the code in `dashboards.go` (`make dashboards` writes\n")
	b.WriteString("`dashboards/*.json` and this file). To load them into a Grafana, mount\n")
	b.WriteString("`provisioning/dashboards/convergence.yml` into `/etc/grafana/provisioning/dashboards/` and\n")
	b.WriteString("`dashboards/` at `/var/lib/grafana/dashboards/convergence`, and give Grafana a Prometheus data\n")
	b.WriteString("source (`provisioning/datasources/prometheus.yml` names the compose stack's); each dashboard\n")
	b.WriteString("picks its Prometheus with the `datasource` variable. Every query is checked to parse, and every\n")
	b.WriteString("metric it names to be served by a running platform.\n")
	for _, d := range Boards() {
		fmt.Fprintf(&b, "\n## %s (`dashboards/%s`)\n\n%s\n\n| panel | queries |\n|---|---|\n", d.Title, d.File, d.Description)
		for _, p := range d.Panels {
			exprs := make([]string, len(p.Queries))
			for i, q := range p.Queries {
				exprs[i] = "`" + strings.ReplaceAll(q.Expr, "|", "\\|") + "`"
			}
			fmt.Fprintf(&b, "| %s | %s |\n", p.Title, strings.Join(exprs, "<br>"))
		}
	}
	return []byte(b.String())
}

// Panel sizes on Grafana's 24-column grid: stats in a row of four, graphs two by two.
const (
	statW, statH   = 6, 4
	graphW, graphH = 12, 8
	gridW          = 24
)

// build makes the dashboard in Grafana's classic JSON model, which file provisioning loads in
// every Grafana version; the SDK's dashboardv2 needs Grafana 12's new dashboard API.
func (b Board) build() (dashboard.Dashboard, error) { //nolint:staticcheck // See above.
	//nolint:staticcheck // See build's comment.
	d := dashboard.NewDashboardBuilder(b.Title).
		Uid(b.UID).
		Description(b.Description).
		Tags([]string{"convergence"}).
		Refresh("30s").
		Time("now-3h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Prometheus").Type("prometheus"))
	var x, y, rowH uint32
	for _, p := range b.Panels {
		w, h := uint32(graphW), uint32(graphH)
		if p.Stat {
			w, h = statW, statH
		}
		if x+w > gridW {
			x, y, rowH = 0, y+rowH, 0
		}
		d.WithPanel(p.build(dashboard.GridPos{X: x, Y: y, W: w, H: h}))
		x, rowH = x+w, max(rowH, h)
	}
	return d.Build()
}

// datasource is the dashboard's Prometheus, picked by its variable.
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func (p Panel) build(pos dashboard.GridPos) cog.Builder[dashboard.Panel] {
	targets := make([]*prometheus.DataqueryBuilder, len(p.Queries))
	for i, q := range p.Queries {
		targets[i] = prometheus.NewDataqueryBuilder().Expr(q.Expr).LegendFormat(q.Legend).
			RefId(string(rune('A' + i))).Datasource(datasource)
	}
	if p.Stat {
		s := stat.NewPanelBuilder().Title(p.Title).Description(p.Description).Unit(p.Unit).
			Datasource(datasource).GridPos(pos).GraphMode(common.BigValueGraphModeArea).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
		for _, t := range targets {
			s.WithTarget(t.Instant())
		}
		return s
	}
	g := timeseries.NewPanelBuilder().Title(p.Title).Description(p.Description).Unit(p.Unit).
		Datasource(datasource).GridPos(pos).Min(0).FillOpacity(10)
	for _, t := range targets {
		g.WithTarget(t)
	}
	return g
}
