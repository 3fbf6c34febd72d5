package platform

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"

	"github.com/convergence-dev/convergence/services/api"
	"github.com/convergence-dev/convergence/services/converger"
	"github.com/convergence-dev/convergence/services/metering"
	"github.com/convergence-dev/convergence/services/provisioner"
)

// Targets a process can run.
const (
	TargetAll         = "all"
	TargetAPI         = "api"
	TargetProvisioner = "provisioner"
	TargetConverger   = "converger"
	TargetMetering    = "metering"
)

var serviceTargets = []string{TargetAPI, TargetProvisioner, TargetConverger, TargetMetering}

// Config is what a process reads at start.
type Config struct {
	// Target is "all" or a comma list of services to run in this process.
	Target string
	// HTTPAddr is where the process serves the API (if it runs it), /healthz, and /readyz that
	// says only ready or not ready.
	HTTPAddr string
	// OpsAddr is the operators' listener: /metrics, /healthz, and /readyz with the failing
	// checks and their errors. Bound to loopback by default, where tenants cannot reach it.
	OpsAddr string
	// AdminAddr, when set, serves the API's admin routes there instead of on HTTPAddr, so that
	// the address tenants call answers only their own routes.
	AdminAddr string
	// DataDir holds what the process keeps on disk in development: the local PostgreSQL
	// cluster, the embedded JetStream store, the generated admin token, tenant compose files.
	DataDir string
	// DatabaseURL is the PostgreSQL to use; empty starts a local one in DataDir. Migrations
	// run with it, and each service connects with it too unless ServiceDatabaseURLs names
	// another login for that service.
	DatabaseURL string
	// ServiceDatabaseURLs are per-service logins to DatabaseURL's database; an empty one
	// means DatabaseURL. Whatever the login, each service takes its own database role
	// (internal/pgrole), so the login must be a member of that role.
	ServiceDatabaseURLs ServiceDatabaseURLs
	// NATSURL is the NATS server to use; empty runs an embedded one with its store in DataDir
	// and its authority (natsauth) in DataDir/nats-auth, which issues each service its user.
	NATSURL string
	// NATSCreds is the credentials file the services connect to NATSURL with; empty connects
	// anonymously, which only a server without authentication accepts.
	NATSCreds string
	// NATSListen is where the embedded NATS server listens for outside clients; empty serves
	// this process only.
	NATSListen string
	// SecretsKeyFile is the keyring that seals the secrets the platform reads back (webhook
	// signing secrets; internal/seal); empty keeps one in DataDir/secrets.keys, made on first
	// use.
	SecretsKeyFile string
	// Migrate applies pending migrations at start.
	Migrate bool

	API         api.Config
	Provisioner provisioner.Config
	Converger   converger.Config
	Metering    metering.Config
}

// RegisterFlags registers every flag of the process and its services on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", TargetAll, "services to run: all, or a comma list of "+strings.Join(serviceTargets, ", "))
	fs.StringVar(&c.HTTPAddr, "http.addr", ":3000", "address of the HTTP server (API, /healthz, /readyz)")
	fs.StringVar(&c.OpsAddr, "ops.addr", "127.0.0.1:9464", "address of the operators' listener: /metrics, and /readyz with the failing checks")
	fs.StringVar(&c.AdminAddr, "admin.addr", "", "address of the API's admin routes; empty serves them on -http.addr")
	fs.StringVar(&c.DataDir, "data-dir", ".convergence", "directory for local state: PostgreSQL, JetStream, admin token")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (env DATABASE_URL); empty starts a local PostgreSQL in the data dir")
	fs.StringVar(&c.ServiceDatabaseURLs.API, "api.database-url", "", "PostgreSQL URL the API logs in with; empty uses -database-url")
	fs.StringVar(&c.ServiceDatabaseURLs.Provisioner, "provisioner.database-url", "", "PostgreSQL URL the provisioner logs in with; empty uses -database-url")
	fs.StringVar(&c.ServiceDatabaseURLs.Converger, "converger.database-url", "", "PostgreSQL URL the converger logs in with; empty uses -database-url")
	fs.StringVar(&c.ServiceDatabaseURLs.Metering, "metering.database-url", "", "PostgreSQL URL the metering logs in with; empty uses -database-url")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS URL (env NATS_URL); empty runs an embedded JetStream server")
	fs.StringVar(&c.NATSCreds, "nats.creds", "", "NATS credentials file to connect to NATS_URL with (`convergence nats creds` writes one)")
	fs.StringVar(&c.NATSListen, "nats.listen", "127.0.0.1:4222", "where the embedded NATS server listens for integrators; empty for in-process only")
	fs.StringVar(&c.SecretsKeyFile, "secrets.key-file", "", "keyring that seals webhook secrets in the database; empty keeps one in <data-dir>/secrets.keys")
	fs.BoolVar(&c.Migrate, "migrate", true, "apply database migrations at start")
	fs.StringVar(&c.API.AdminToken, "admin-token", "", "operator token for the admin API; empty reads or generates <data-dir>/admin-token")
	c.API.RegisterFlags(fs)
	c.Provisioner.RegisterFlags(fs)
	c.Converger.RegisterFlags(fs)
	c.Metering.RegisterFlags(fs)
}

// Targets returns the services the process runs, in a fixed order.
func (c Config) Targets() ([]string, error) {
	var out []string
	for _, t := range strings.Split(c.Target, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == TargetAll:
			return slices.Clone(serviceTargets), nil
		case slices.Contains(serviceTargets, t):
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		default:
			return nil, fmt.Errorf("unknown target %q: choose all, or a comma list of %s", t, strings.Join(serviceTargets, ", "))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(serviceTargets, a) - slices.Index(serviceTargets, b) })
	return out, nil
}

// Validate says what is wrong with the config. The admin token is checked once it is known
// (it may be generated at start).
func (c Config) Validate() error {
	if _, err := c.Targets(); err != nil {
		return err
	}
	if c.HTTPAddr == "" {
		return errors.New("http.addr is empty: set CONVERGENCE_HTTP_ADDR, e.g. :3000")
	}
	if c.OpsAddr == "" {
		return errors.New("ops.addr is empty: set CONVERGENCE_OPS_ADDR, e.g. 127.0.0.1:9464 (metrics and readiness details)")
	}
	if c.DataDir == "" {
		return errors.New("data-dir is empty: set CONVERGENCE_DATA_DIR")
	}
	if c.NATSCreds != "" && c.NATSURL == "" {
		return errors.New("nats.creds is set but NATS_URL is not: the embedded server issues its own users; set NATS_URL, or unset CONVERGENCE_NATS_CREDS")
	}
	if c.DatabaseURL == "" {
		for _, svc := range serviceTargets {
			if c.ServiceDatabaseURLs.For(svc) != "" {
				return fmt.Errorf("%s.database-url is set but database-url is not: set DATABASE_URL to the same database (migrations run with it), or unset both to use a local PostgreSQL", svc)
			}
		}
	}
	for _, v := range []interface{ Validate() error }{c.Provisioner, c.Converger, c.Metering} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// ServiceDatabaseURLs are the per-service database logins (CONVERGENCE_<SERVICE>_DATABASE_URL).
type ServiceDatabaseURLs struct {
	API, Provisioner, Converger, Metering string
}

// For returns the login URL of service, empty when none is set.
func (u ServiceDatabaseURLs) For(service string) string {
	switch service {
	case TargetAPI:
		return u.API
	case TargetProvisioner:
		return u.Provisioner
	case TargetConverger:
		return u.Converger
	case TargetMetering:
		return u.Metering
	}
	return ""
}
