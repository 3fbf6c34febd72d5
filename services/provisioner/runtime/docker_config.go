package runtime

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Defaults for [DockerConfig] fields left zero.
const (
	DefaultNamePrefix      = "convergence"
	DefaultHostIP          = "127.0.0.1"
	DefaultUser            = "65532:65532"
	DefaultTmpfsBytes      = 64 << 20
	DefaultRestartRetries  = 3
	DefaultLogMaxSize      = "10m"
	DefaultLogMaxFiles     = 3
	DefaultArchiveLogLines = 200
	DefaultReplaceGrace    = 10 * time.Second
	DefaultSubnetPool      = "10.213.0.0/16"
	DefaultSubnetBits      = 28
)

// DockerConfig is what the Docker runtime reads at start. Zero fields take the defaults above;
// Validate says what is wrong with the rest.
type DockerConfig struct {
	// NamePrefix starts every object name: container <prefix>-<instance>-env-<id>, network
	// <prefix>-<instance>-env-<id>-net, volume <prefix>-<instance>-env-<id>-secrets.
	NamePrefix string
	// Instance is the installation's id (the provisioner keeps it in its database): part of
	// every name and the LabelInstance of every object, which List, Events, Remove and Ensure
	// require, so that installations sharing an engine never touch each other's objects, even
	// with the same prefix. Empty, for an installation whose objects predate instance ids:
	// names without it, and only objects without the label are its own.
	Instance string
	// HostIP is the host address tenant ports are published on. The default, 127.0.0.1,
	// keeps tenants reachable only from the host (a reverse proxy or the API in front);
	// "0.0.0.0" publishes them on every interface.
	HostIP string
	// User is the uid:gid every tenant runs as. It must not be root.
	User string
	// TmpfsBytes sizes the writable tmpfs /tmp (noexec, nosuid, nodev). It counts against the
	// container's memory limit.
	TmpfsBytes int64
	// RestartRetries is how often the engine restarts a crashed tenant before giving up
	// (restart policy on-failure).
	RestartRetries int
	// LogMaxSize and LogMaxFiles cap the json-file logs the engine keeps per tenant.
	LogMaxSize  string
	LogMaxFiles int
	// ArchiveLogLines is how many last log lines Remove returns for archiving.
	ArchiveLogLines int
	// ReplaceGrace is the stop grace period when Ensure replaces a container whose spec
	// changed.
	ReplaceGrace time.Duration
	// SubnetPool is the IPv4 range tenant networks take their subnets from, SubnetBits the
	// prefix length of each (the default /28 of 10.213.0.0/16 holds 4096 tenants). The
	// engine's default pools hold only about 30 bridge networks, so they would cap the host at
	// about 30 tenants; [EngineSubnets] uses them anyway. The pool must not overlap a network
	// the host or the tenants need to reach.
	SubnetPool string
	SubnetBits int
	// NetworkMTU sets the MTU of tenant networks; zero keeps the engine's default of 1500,
	// which user-defined networks use even when the daemon's own "mtu" setting is lower.
	NetworkMTU int
	// ExtraHosts adds host:ip entries to every tenant's /etc/hosts, for example
	// "host.docker.internal:host-gateway" so a tenant can reach an API on the host.
	ExtraHosts []string
	// Labels are put on every object in addition to the convergence.* labels, and List,
	// Events, Remove and Ensure only act on objects that carry them all. Tests use a unique
	// label per run; installations sharing an engine can use one each.
	Labels map[string]string
}

// RegisterFlags registers the scalar settings as flags prefixed "provisioner.runtime.".
func (c *DockerConfig) RegisterFlags(fs *flag.FlagSet) {
	const p = "provisioner.runtime."
	fs.StringVar(&c.NamePrefix, p+"name-prefix", DefaultNamePrefix, "prefix of tenant container and network names")
	fs.StringVar(&c.HostIP, p+"host-ip", DefaultHostIP, "host address tenant ports are published on (0.0.0.0 for all interfaces)")
	fs.StringVar(&c.User, p+"user", DefaultUser, "uid:gid tenant containers run as (never root)")
	fs.Int64Var(&c.TmpfsBytes, p+"tmpfs-bytes", DefaultTmpfsBytes, "size of each tenant's tmpfs /tmp in bytes")
	fs.IntVar(&c.RestartRetries, p+"restart-retries", DefaultRestartRetries, "restarts of a crashed tenant before the engine gives up")
	fs.StringVar(&c.LogMaxSize, p+"log-max-size", DefaultLogMaxSize, "size of one tenant log file (json-file max-size)")
	fs.IntVar(&c.LogMaxFiles, p+"log-max-files", DefaultLogMaxFiles, "tenant log files kept (json-file max-file)")
	fs.IntVar(&c.ArchiveLogLines, p+"archive-log-lines", DefaultArchiveLogLines, "last log lines kept when a tenant is removed")
	fs.DurationVar(&c.ReplaceGrace, p+"replace-grace", DefaultReplaceGrace, "stop grace period when a changed tenant is replaced")
	fs.IntVar(&c.NetworkMTU, p+"network-mtu", 0, "MTU of tenant networks (0 for the engine default)")
	fs.StringVar(&c.SubnetPool, p+"subnet-pool", DefaultSubnetPool, `IPv4 range tenant network subnets come from ("engine" for the engine's default pools)`)
	fs.IntVar(&c.SubnetBits, p+"subnet-bits", DefaultSubnetBits, "prefix length of each tenant network's subnet")
}

// withDefaults returns the config with zero fields filled in.
func (c DockerConfig) withDefaults() DockerConfig {
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.HostIP == "" {
		c.HostIP = DefaultHostIP
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.TmpfsBytes == 0 {
		c.TmpfsBytes = DefaultTmpfsBytes
	}
	if c.RestartRetries == 0 {
		c.RestartRetries = DefaultRestartRetries
	}
	if c.LogMaxSize == "" {
		c.LogMaxSize = DefaultLogMaxSize
	}
	if c.LogMaxFiles == 0 {
		c.LogMaxFiles = DefaultLogMaxFiles
	}
	if c.ArchiveLogLines == 0 {
		c.ArchiveLogLines = DefaultArchiveLogLines
	}
	if c.ReplaceGrace == 0 {
		c.ReplaceGrace = DefaultReplaceGrace
	}
	if c.SubnetPool == "" {
		c.SubnetPool = DefaultSubnetPool
	}
	if c.SubnetBits == 0 {
		c.SubnetBits = DefaultSubnetBits
	}
	return c
}

var (
	namePrefix = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,39}$`)
	instanceID = regexp.MustCompile(`^[a-z0-9]{0,16}$`)
	logSize    = regexp.MustCompile(`^[0-9]+[kmg]?$`)
	uidGid     = regexp.MustCompile(`^([0-9]+)(:([0-9]+))?$`)
	labelKey   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
)

// Validate says what is wrong with the config after defaults.
func (c DockerConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	if !namePrefix.MatchString(c.NamePrefix) {
		errs = append(errs, fmt.Errorf("name prefix %q must be 1-40 letters, digits, '_', '.' or '-', starting with a letter or digit", c.NamePrefix))
	}
	if !instanceID.MatchString(c.Instance) {
		errs = append(errs, fmt.Errorf("instance %q must be at most 16 lowercase letters and digits", c.Instance))
	}
	if _, err := netip.ParseAddr(c.HostIP); err != nil {
		errs = append(errs, fmt.Errorf("host ip %q must be an IP address", c.HostIP))
	}
	if m := uidGid.FindStringSubmatch(c.User); m == nil {
		errs = append(errs, fmt.Errorf("user %q must be numeric uid:gid", c.User))
	} else if m[1] == "0" || m[3] == "0" {
		errs = append(errs, fmt.Errorf("user %q must not be root (uid or gid 0)", c.User))
	}
	if c.TmpfsBytes < 0 {
		errs = append(errs, fmt.Errorf("tmpfs size %d must not be negative", c.TmpfsBytes))
	}
	if c.RestartRetries < 0 {
		errs = append(errs, fmt.Errorf("restart retries %d must not be negative", c.RestartRetries))
	}
	if !logSize.MatchString(c.LogMaxSize) {
		errs = append(errs, fmt.Errorf("log max size %q must be a number with an optional k, m or g", c.LogMaxSize))
	}
	if c.LogMaxFiles < 1 {
		errs = append(errs, fmt.Errorf("log max files %d must be at least 1", c.LogMaxFiles))
	}
	if c.ArchiveLogLines < 0 {
		errs = append(errs, fmt.Errorf("archive log lines %d must not be negative", c.ArchiveLogLines))
	}
	if c.ReplaceGrace < 0 {
		errs = append(errs, fmt.Errorf("replace grace %s must not be negative", c.ReplaceGrace))
	}
	if _, _, err := parseSubnetPool(c.SubnetPool, c.SubnetBits); err != nil {
		errs = append(errs, err)
	}
	if c.NetworkMTU != 0 && (c.NetworkMTU < 576 || c.NetworkMTU > 65535) {
		errs = append(errs, fmt.Errorf("network mtu %d must be 0 or between 576 and 65535", c.NetworkMTU))
	}
	for _, h := range c.ExtraHosts {
		if name, addr, ok := strings.Cut(h, ":"); !ok || name == "" || addr == "" {
			errs = append(errs, fmt.Errorf("extra host %q must be name:ip", h))
		}
	}
	for k, v := range c.Labels {
		switch {
		case isOwnLabel(k):
			errs = append(errs, fmt.Errorf("label %q is set by the runtime", k))
		case !labelKey.MatchString(k):
			errs = append(errs, fmt.Errorf("label %q must be letters, digits, '.', '_', '-' or '/'", k))
		case v == "":
			errs = append(errs, fmt.Errorf("label %q needs a value", k))
		}
	}
	return errors.Join(errs...)
}

// isOwnLabel reports whether key is one of the labels the runtime sets itself.
func isOwnLabel(key string) bool {
	switch key {
	case LabelManaged, LabelEnvID, LabelOrgID, LabelName, LabelGeneration, LabelSpecHash, LabelImage, LabelSecretFile:
		return true
	}
	return false
}
