package cli

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"

	"github.com/convergence-dev/convergence/pkg/api"
)

// invoiceCommands are the invoice subcommands.
var invoiceCommands = []command{
	{group: "invoice", name: "create", usage: "ORG_ID PERIOD (YYYY-MM)", flags: invoiceCreate},
	{group: "invoice", name: "finalize", usage: "ORG_ID INVOICE_ID", flags: invoiceFinalize},
	{group: "invoice", name: "list", usage: "ORG_ID [-limit N] [-cursor C]", flags: invoiceList},
	{group: "invoice", name: "show", usage: "ORG_ID INVOICE_ID [-format json|csv|stripe]", flags: invoiceShow},
}

var invoiceColumns = []column[api.Invoice]{
	{"INVOICE ID", func(i api.Invoice) any { return i.InvoiceID }},
	{"ORG ID", func(i api.Invoice) any { return i.OrgID }},
	{"PERIOD", func(i api.Invoice) any { return i.Period }},
	{"STATUS", func(i api.Invoice) any { return i.Status }},
	{"NUMBER", func(i api.Invoice) any { return i.Number }},
	{"TOTAL", func(i api.Invoice) any { return i.Total }},
	{"CURRENCY", func(i api.Invoice) any { return i.Currency }},
	{"CREATED", func(i api.Invoice) any { return i.CreatedAt }},
	{"FINALIZED", func(i api.Invoice) any { return i.FinalizedAt }},
}

var invoiceLineColumns = []column[api.InvoiceLine]{
	{"TENANT", func(l api.InvoiceLine) any { return l.EnvID }},
	{"KIND", func(l api.InvoiceLine) any { return l.Kind }},
	{"PROVIDER", func(l api.InvoiceLine) any { return l.Provider }},
	{"MODEL", func(l api.InvoiceLine) any { return l.Model }},
	{"MONTH", func(l api.InvoiceLine) any { return l.UsagePeriod }},
	{"ADJUSTMENT", func(l api.InvoiceLine) any { return l.Adjustment }},
	{"INPUT", func(l api.InvoiceLine) any { return l.InputTokens }},
	{"OUTPUT", func(l api.InvoiceLine) any { return l.OutputTokens }},
	{"CACHED", func(l api.InvoiceLine) any { return l.CachedTokens }},
	{"CONTAINER S", func(l api.InvoiceLine) any { return l.ContainerSeconds }},
	{"AMOUNT", func(l api.InvoiceLine) any { return l.Amount }},
}

// twoArgs checks that args are exactly two positional arguments, named what.
func twoArgs(args []string, what string) (string, string, error) {
	if len(args) != 2 {
		return "", "", fmt.Errorf("give %s", what)
	}
	return args[0], args[1], nil
}

// printInvoice prints an invoice and its lines.
func printInvoice(c *caller, raw []byte) error {
	return show(c, raw, func(a api.InvoiceAnswer) error {
		if err := vertical(c.out, a.Invoice, invoiceColumns); err != nil {
			return err
		}
		fmt.Fprintln(c.out)
		return table(c.out, a.Invoice.Lines, invoiceLineColumns)
	})
}

func invoicePath(org string, rest ...string) string {
	p := "/api/v1/orgs/" + url.PathEscape(org) + "/invoices"
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func invoiceCreate(*flag.FlagSet) func(*caller, []string) error {
	return func(c *caller, args []string) error {
		org, period, err := twoArgs(args, "ORG_ID and PERIOD (YYYY-MM)")
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodPost, invoicePath(org), nil, api.CreateInvoiceJSONBody{Period: period})
		if err != nil {
			return err
		}
		return printInvoice(c, raw)
	}
}

func invoiceFinalize(*flag.FlagSet) func(*caller, []string) error {
	return func(c *caller, args []string) error {
		org, id, err := twoArgs(args, "ORG_ID and INVOICE_ID")
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodPost, invoicePath(org, id, "finalize"), nil, nil)
		if err != nil {
			return err
		}
		return printInvoice(c, raw)
	}
}

func invoiceList(fs *flag.FlagSet) func(*caller, []string) error {
	paging := pageFlags(fs)
	return func(c *caller, args []string) error {
		org, err := oneArg(args, "ORG_ID")
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodGet, invoicePath(org), paging(nil), nil)
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.InvoiceList) error { return page(c.out, a.Invoices, a.NextCursor, invoiceColumns) })
	}
}

func invoiceShow(fs *flag.FlagSet) func(*caller, []string) error {
	format := fs.String("format", "", "csv or stripe: the invoice in that form, as the API gives it")
	return func(c *caller, args []string) error {
		org, id, err := twoArgs(args, "ORG_ID and INVOICE_ID")
		if err != nil {
			return err
		}
		q := url.Values{}
		if *format != "" {
			q.Set("format", *format)
		}
		raw, err := c.do(http.MethodGet, invoicePath(org, id), q, nil)
		if err != nil {
			return err
		}
		if *format != "" {
			_, err := c.out.Write(raw)
			return err
		}
		return printInvoice(c, raw)
	}
}
