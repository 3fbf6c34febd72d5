package cli

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/convergence-dev/convergence/pkg/api"
)

var auditCommand = command{group: "audit", usage: "[-org ID] [-tenant ENV_ID] [-action A] [-from TIME] [-to TIME] [-limit N] [-cursor C]", flags: audit}

// auditColumns are what an audit log row shows.
var auditColumns = []column[api.AuditEntry]{
	{"ID", func(e api.AuditEntry) any { return e.ID }},
	{"AT", func(e api.AuditEntry) any { return e.At }},
	{"ACTOR", func(e api.AuditEntry) any { return e.Actor }},
	{"ACTION", func(e api.AuditEntry) any { return e.Action }},
	{"TARGET", func(e api.AuditEntry) any { return e.Target }},
	{"STATUS", func(e api.AuditEntry) any { return e.Status }},
	{"OUTCOME", func(e api.AuditEntry) any { return e.Outcome }},
	{"CLIENT", func(e api.AuditEntry) any { return e.Client }},
	{"REQUEST ID", func(e api.AuditEntry) any { return e.RequestID }},
}

func audit(fs *flag.FlagSet) func(*caller, []string) error {
	org := fs.Int64("org", 0, "only this organization's entries")
	tenant := fs.Int64("tenant", 0, "only this tenant's entries")
	action := fs.String("action", "", "only this action, such as key.revoke")
	from := fs.String("from", "", "entries from this time (RFC 3339) or day (YYYY-MM-DD) on")
	to := fs.String("to", "", "entries before this time or day")
	paging := pageFlags(fs)
	return func(c *caller, args []string) error {
		if len(args) != 0 {
			return fmt.Errorf("unexpected argument %q", args[0])
		}
		q := url.Values{}
		for name, v := range map[string]int64{"orgId": *org, "envId": *tenant} {
			if v != 0 {
				q.Set(name, strconv.FormatInt(v, 10))
			}
		}
		for name, v := range map[string]string{"action": *action, "from": *from, "to": *to} {
			if v != "" {
				q.Set(name, v)
			}
		}
		raw, err := c.do(http.MethodGet, "/api/v1/audit", paging(q), nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.AuditPage) error { return page(c.out, a.Entries, a.NextCursor, auditColumns) })
	}
}
