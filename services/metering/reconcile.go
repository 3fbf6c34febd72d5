package metering

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/convergence-dev/convergence/pkg/events"
	"github.com/convergence-dev/convergence/services/metering/ledger"
	"github.com/convergence-dev/convergence/services/metering/pricing"
)

// ReconcileOptions are the options of the reconcile command.
type ReconcileOptions struct {
	// From and To are the first and last UTC day, YYYY-MM-DD; empty From is the first day of
	// the current month, empty To today.
	From, To string
	// Repair writes what the ledger lacks; without it the command only reports.
	Repair bool
	// JSON prints the report as JSON instead of a table.
	JSON bool
}

// RegisterFlags registers the reconcile command's flags on fs.
func (o *ReconcileOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.From, "from", "", "first day to reconcile, YYYY-MM-DD (UTC); default: the first day of this month")
	fs.StringVar(&o.To, "to", "", "last day to reconcile, inclusive; default: today")
	fs.BoolVar(&o.Repair, "repair", false, "record missing tasks, adjust differing counts, and price usage the prices now cover")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
}

// ErrUnreconciled is returned by Reconcile when gaps remain after it: the command should exit
// non-zero, so a scheduled run is noticed.
var ErrUnreconciled = errors.New("the ledger and the converger's records disagree")

// Reconcile compares the ledger with the converger's task records, which it asks for on nc,
// over the days o names, repairs the gaps if o.Repair (pricing with the price table of cfg,
// which it registers), and writes the report to w. It returns ErrUnreconciled when gaps remain.
func Reconcile(ctx context.Context, cfg Config, pool *pgxpool.Pool, nc *nats.Conn, o ReconcileOptions, w io.Writer) error {
	from, to, err := ledger.ParseRange(o.From, o.To, time.Now())
	if err != nil {
		return err
	}
	var prices ledger.Prices
	if o.Repair {
		t, err := pricing.Load(cfg.Prices)
		if err != nil {
			return fmt.Errorf("metering.prices: %w", err)
		}
		if prices, err = ledger.RegisterPrices(ctx, pool, t); err != nil {
			return err
		}
	}
	rep, err := ledger.Reconcile(ctx, pool, convergerRecords{nc}, prices, ledger.ReconcileOptions{From: from, To: to, Repair: o.Repair})
	if err != nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := WriteReport(w, rep); err != nil {
		return err
	}
	if !rep.Clean() {
		return ErrUnreconciled
	}
	return nil
}

// WriteReport writes r as text for an operator.
func WriteReport(w io.Writer, r ledger.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "reconciliation %s to %s (UTC days)\n", r.From.Format(time.DateOnly), r.To.Format(time.DateOnly))
	fmt.Fprintf(tw, "tasks checked\t%d\nmatched\t%d\nmissing from the ledger\t%d\ncounts differ\t%d\nnot in the converger's records\t%d\n",
		r.TasksChecked, r.Matched, len(r.Missing), len(r.Mismatched), len(r.Orphaned))
	fmt.Fprintf(tw, "unpriced lines\t%d (%d tokens)\n", r.Unpriced.Lines, r.Unpriced.TotalTokens)
	if r.Repair {
		fmt.Fprintf(tw, "repriced lines\t%d (%d tokens)\n", r.Unpriced.RepricedLines, r.Unpriced.RepricedTokens)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range []struct {
		title string
		gaps  []ledger.TaskGap
	}{{"missing from the ledger", r.Missing}, {"counts differ", r.Mismatched}, {"not in the converger's records", r.Orphaned}} {
		if len(s.gaps) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", s.title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  task\ttenant\tfinished\ttask tokens (in/out/cached/total)\tledger tokens\trepaired")
		for _, g := range s.gaps {
			task := "-" // an orphan has no record
			if g.Status != "" {
				task = usageText(g.Task)
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%t\n", g.TaskID, g.EnvID, g.FinishedAt.Format(time.RFC3339),
				task, usageText(g.Ledger), g.Repaired)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	var err error
	switch {
	case r.Clean():
		_, err = fmt.Fprintln(w, "\nthe ledger agrees with the converger's records")
	case !r.Repair:
		_, err = fmt.Fprintln(w, "\nrun again with -repair to record what the ledger lacks")
	}
	return err
}

func usageText(u events.Usage) string {
	return fmt.Sprintf("%d/%d/%d/%d", u.InputTokens, u.OutputTokens, u.CachedTokens, u.TotalTokens)
}
