package metering

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/convergence-dev/convergence/pkg/events/consumer"
)

// Config is what the metering reads at start.
type Config struct {
	// Prices is the price file (JSON, see package pricing); empty uses the built-in prices.
	Prices string
	// PricesReload is how often the price file is checked for changes; 0 never checks.
	PricesReload time.Duration
	// BatchSize is the most messages one ingest transaction records.
	BatchSize int
	// IdleWait is how long a pull waits for a message when none is pending. It bounds nothing
	// but the length of an idle poll: a message that arrives is taken at once.
	IdleWait time.Duration
	// AckWait is how long a delivered message may go unacknowledged before JetStream gives it
	// to another replica. Batches held through a database outage are kept with heartbeats.
	AckWait time.Duration
	// MaxDeliver is the delivery at which a message that still fails is dead-lettered.
	MaxDeliver int
	// RollupMerge is how often the rollup deltas appended by ingest are merged into the daily
	// and monthly rollups. Reads are current either way; merging keeps them cheap.
	RollupMerge time.Duration
	// ReconcileCheck is how often the ledger is compared with the converger's records of
	// yesterday's and today's tasks, without repairing, for the UsageUnreconciled alert; 0
	// never.
	ReconcileCheck time.Duration
}

// Defaults of the fields left zero.
const (
	DefaultBatchSize      = 500
	DefaultIdleWait       = 5 * time.Second
	DefaultAckWait        = consumer.DefaultAckWait
	DefaultMaxDeliver     = consumer.DefaultMaxDeliver
	DefaultPricesReload   = 30 * time.Second
	DefaultRollupMerge    = time.Second
	DefaultReconcileCheck = time.Hour
)

// RegisterFlags registers the metering's flags on fs, prefixed "metering.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Prices, "metering.prices", "", "price table file (JSON); empty uses the built-in prices")
	fs.DurationVar(&c.PricesReload, "metering.prices-reload", DefaultPricesReload, "how often the price file is checked for changes; 0 never")
	fs.IntVar(&c.BatchSize, "metering.batch-size", DefaultBatchSize, "most events recorded in one ledger transaction")
	fs.DurationVar(&c.IdleWait, "metering.idle-wait", DefaultIdleWait, "how long a pull waits when no event is pending")
	fs.DurationVar(&c.AckWait, "metering.ack-wait", DefaultAckWait, "how long an event may go unacknowledged before it is redelivered")
	fs.IntVar(&c.MaxDeliver, "metering.max-deliver", DefaultMaxDeliver, "delivery at which an event that still fails is dead-lettered")
	fs.DurationVar(&c.RollupMerge, "metering.rollup-merge", DefaultRollupMerge, "how often ingested rollup deltas are merged into the daily and monthly rollups")
	fs.DurationVar(&c.ReconcileCheck, "metering.reconcile-check", DefaultReconcileCheck, "how often the ledger is checked against the converger's task records of yesterday and today (report only; 0 never)")
}

// withDefaults fills in the zero fields, for configs built in code rather than from flags.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.IdleWait == 0 {
		c.IdleWait = DefaultIdleWait
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.RollupMerge == 0 {
		c.RollupMerge = DefaultRollupMerge
	}
	return c
}

// Validate says what is wrong with the config. Zero fields take their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.BatchSize < 1 || c.BatchSize > 10_000:
		return fmt.Errorf("metering.batch-size %d: must be from 1 to 10000", c.BatchSize)
	case c.IdleWait < 10*time.Millisecond || c.IdleWait > time.Minute:
		return fmt.Errorf("metering.idle-wait %s: must be from 10ms to 1m", c.IdleWait)
	case c.AckWait < 300*time.Millisecond:
		return fmt.Errorf("metering.ack-wait %s: must be at least 300ms", c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("metering.max-deliver %d: must be at least 1", c.MaxDeliver)
	case c.RollupMerge < 10*time.Millisecond || c.RollupMerge > time.Minute:
		return fmt.Errorf("metering.rollup-merge %s: must be from 10ms to 1m", c.RollupMerge)
	case c.PricesReload < 0:
		return errors.New("metering.prices-reload must not be negative; 0 disables reloading")
	case c.ReconcileCheck < 0 || (c.ReconcileCheck > 0 && c.ReconcileCheck < 10*time.Millisecond):
		return fmt.Errorf("metering.reconcile-check %s: must be 10ms or more, or 0 to never check", c.ReconcileCheck)
	}
	return nil
}
