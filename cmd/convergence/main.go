// Command convergence runs the Convergence platform. One binary holds all four services;
// "serve -target" picks which run in this process.
//
//	convergence serve [-target=all|api,provisioner,converger,metering] [flags]
//	convergence migrate [flags]
//	convergence tenant spawn|list|status|logs|destroy ...   (operator commands on the admin API)
//	convergence tenant keys list|rotate|revoke ...
//	convergence tenant budget ENV_ID [-set AMOUNT|none]
//	convergence org create|list|update|budget ...
//	convergence invoice create|finalize|list|show ...
//	convergence usage [-from DAY] [-to DAY] [-group-by ...]
//	convergence audit [-org ID] [-tenant ENV_ID] [-action A] [-from T] [-to T]
//	convergence reconcile [-from DAY] [-to DAY] [-repair] [flags]
//	convergence nats [flags]       a standalone NATS server with JetStream (compose stack)
//	convergence nats creds ROLE    a NATS credentials file for a new user of ROLE (integrator, ...)
//	convergence nats revoke -creds FILE   the NATS server cuts that user off within seconds
//	convergence nats init -nats.auth-dir DIR   make a NATS authority for a cluster's nodes to share
//	convergence secrets new-key|reseal   rotate the key that seals webhook secrets
//	convergence egress show|remove   the tenants' egress rules in the host's firewall
//	convergence postgres [flags]   a standalone PostgreSQL from the image's binaries (compose stack)
//	convergence version
//
// Every flag can also be set in the environment as CONVERGENCE_<FLAG>, upper case with dots
// and dashes as underscores (-http.addr is CONVERGENCE_HTTP_ADDR); -database-url and -nats-url
// also read DATABASE_URL and NATS_URL. A flag on the command line wins over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/convergence-dev/convergence/internal/cli"
	"github.com/convergence-dev/convergence/internal/platform"
	"github.com/convergence-dev/convergence/internal/seal"
	"github.com/convergence-dev/convergence/services/metering"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "convergence:", err)
		os.Exit(1)
	}
}

const usage = `usage: convergence <command> [flags]

commands:
  serve     run the platform's services (-target=all by default)
  migrate   apply database migrations and exit
  tenant    spawn, list, status, logs, destroy tenants; "tenant keys" list, rotate, revoke their
            API keys; "tenant budget" shows or sets one's monthly budget (admin API)
  org       create, list, update organizations; "org budget" shows or sets one's monthly budget
            (admin API)
  invoice   create, finalize, list, show an organization's monthly invoices (admin API)
  usage     usage and cost, by organization, tenant, model, day or month (admin API)
  audit     who did what to organizations, tenants and keys, and how it ended (admin API)
  reconcile compare the usage ledger with the task records; -repair fills the gaps
  nats      run a standalone NATS server with JetStream; "nats creds ROLE" issues a user,
            "nats revoke -creds FILE" revokes one, "nats init -nats.auth-dir DIR" makes an
            authority for a cluster's nodes to share
  secrets   "secrets new-key" prints a key for the secrets keyring; "secrets reseal" moves every
            sealed secret to the keyring's first key
  egress    "egress show" prints the tenants' egress rules the host's firewall holds for this
            installation; "egress remove" removes them (make down does)
  postgres  run a standalone PostgreSQL from this machine's server binaries
  version   print the version

Run "convergence <command> -h" for a command's flags.`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "convergence", buildVersion())
		return nil
	case "tenant", "org", "invoice", "usage", "audit":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return cli.Run(ctx, append([]string{cmd}, args...), os.LookupEnv, stdout, stderr)
	case "nats":
		return runNATS(args, stdout, stderr)
	case "postgres":
		return runPostgres(args, stderr)
	case "serve", "migrate", "reconcile":
	case "secrets":
		if len(args) > 0 && args[0] == "new-key" {
			fmt.Fprintln(stdout, seal.NewKeyLine())
			return nil
		}
		if len(args) == 0 || args[0] != "reseal" {
			return errors.New(`secrets: "secrets new-key" prints a new key line for the keyring; "secrets reseal [flags]" seals every webhook secret again under its first key`)
		}
		cmd, args = "secrets reseal", args[1:]
	case "egress":
		if len(args) == 0 || (args[0] != "show" && args[0] != "remove") {
			return errors.New(`egress: "egress show [flags]" prints the tenants' egress rules the host's firewall holds for this installation; "egress remove [flags]" removes them`)
		}
		cmd, args = "egress "+args[0], args[1:]
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}

	fs := flag.NewFlagSet("convergence "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg platform.Config
	cfg.RegisterFlags(fs)
	var reconcile metering.ReconcileOptions
	if cmd == "reconcile" {
		reconcile.RegisterFlags(fs)
	}
	var logs logOptions
	logs.register(fs)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	logger, err := logs.logger(stderr)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "migrate":
		return platform.Migrate(ctx, cfg, logger)
	case "reconcile":
		return platform.Reconcile(ctx, cfg, reconcile, stdout, logger)
	case "secrets reseal":
		return platform.Reseal(ctx, cfg, stdout, logger)
	case "egress show", "egress remove":
		return runEgress(cmd, cfg, stdout)
	}
	logger.Info("starting convergence", "version", buildVersion(), "target", cfg.Target)
	if err := platform.Run(ctx, cfg, logger); err != nil {
		return err
	}
	logger.Info("convergence stopped")
	return nil
}

// logOptions are the logging flags every long-running command has.
type logOptions struct{ format, level string }

func (o *logOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "log.format", "auto", "log format: auto (text on a terminal, JSON otherwise), text, or json")
	fs.StringVar(&o.level, "log.level", "info", "log level: debug, info, warn, or error")
}

func (o logOptions) logger(w io.Writer) (*slog.Logger, error) { return newLogger(w, o.format, o.level) }

// parseFlags parses args into fs, refuses positional arguments, and sets the flags not given
// from the environment. help reports that -h was asked for (and answered by fs).
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return false, bindEnv(fs, os.LookupEnv)
}

// envAliases are environment names that operators and scripts already use for some flags.
var envAliases = map[string]string{
	"database-url": "DATABASE_URL",
	"nats-url":     "NATS_URL",
}

// bindEnv sets every flag not given on the command line from its environment variable, or
// from the file its <NAME>_FILE variable names (the trailing newline dropped): the way Docker
// and Kubernetes hand over secrets, so that a database password or admin token need not be in
// the process's environment.
func bindEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		names := []string{envName(f.Name)}
		if alias, ok := envAliases[f.Name]; ok {
			names = append(names, alias)
		}
		for _, name := range names {
			v, ok := lookup(name)
			// A flag with a -file flag of its own (postgres.password) leaves <NAME>_FILE to it.
			ownFile := fs.Lookup(f.Name+"-file") != nil
			if path, isFile := lookup(name + "_FILE"); !ok && isFile && !ownFile {
				b, rerr := os.ReadFile(path) //nolint:gosec // The operator names the file.
				if rerr != nil {
					err = fmt.Errorf("environment variable %s_FILE: %w", name, rerr)
					return
				}
				v, ok, name = strings.TrimRight(string(b), "\r\n"), true, name+"_FILE"
				if strings.ContainsAny(v, "\r\n") {
					// A credentials file, say, named where its path belongs; its content
					// is never shown.
					err = fmt.Errorf("environment variable %s: %s holds more than one line, and a setting is one; for a setting that names a file, set %s to its path", name, path, strings.TrimSuffix(name, "_FILE"))
					return
				}
			}
			if ok {
				if serr := fs.Set(f.Name, v); serr != nil {
					err = fmt.Errorf("environment variable %s: %w", name, serr)
				}
				return
			}
		}
	})
	return err
}

// envName is the environment variable of a flag: -http.addr → CONVERGENCE_HTTP_ADDR.
func envName(flagName string) string {
	return "CONVERGENCE_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flagName))
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log.level %q: choose debug, info, warn, or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: choose auto, text, or json", format)
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
