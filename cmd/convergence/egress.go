package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/convergence-dev/convergence/internal/platform"
)

// runEgress shows or removes the installation's tenant egress rules in the host's firewall
// (cmd is "egress show" or "egress remove"). Both need root or CAP_NET_ADMIN.
func runEgress(cmd string, cfg platform.Config, w io.Writer) error {
	p, err := platform.EgressPolicy(cfg)
	if err != nil {
		return err
	}
	if cmd == "egress remove" {
		if err := p.Remove(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "removed table inet %s (tenant bridges %s*): the installation's tenants reach what Docker lets them\n", p.Table, p.Prefix)
		return err
	}
	rules, err := p.Installed()
	if errors.Is(err, os.ErrNotExist) {
		_, err := fmt.Fprintf(w, "table inet %s is not installed: the provisioner installs it when it starts\n", p.Table)
		return err
	}
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "table inet %s, tenant bridges %s*, first match decides:\n", p.Table, p.Prefix); err != nil {
		return err
	}
	for _, r := range rules {
		if _, err := fmt.Fprintln(w, "  "+r); err != nil {
			return err
		}
	}
	return nil
}
