// Package telemetry holds the process's Prometheus registry and its /metrics, /healthz and
// /readyz endpoints.
package telemetry

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric the project defines.
const Namespace = "convergence"

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Register registers c with reg and returns it, or returns the collector already registered
// under the same descriptor. Several services in one process share metric families this way
// (each consumer adds its own label values) without coordinating who registers first.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // A descriptor clash between two different metrics is a programming error.
	}
	return c
}

// MetricsHandler serves reg in the Prometheus text format, or in OpenMetrics, with the
// latency histograms' exemplars (trace IDs), to a scraper that asks for it.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
}

// Check reports whether one dependency answers.
type Check func(ctx context.Context) error

// Readiness collects the checks that decide /readyz. It is safe for concurrent use.
type Readiness struct {
	mu     sync.Mutex
	checks map[string]Check
}

// Add adds a named check. A service adds its checks while it is wired, before it serves.
func (r *Readiness) Add(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string]Check{}
	}
	r.checks[name] = c
}

// Failures runs every check, each bounded by two seconds, and returns the failing ones.
func (r *Readiness) Failures(ctx context.Context) map[string]string {
	r.mu.Lock()
	checks := make(map[string]Check, len(r.checks))
	for k, v := range r.checks {
		checks[k] = v
	}
	r.mu.Unlock()
	failed := map[string]string{}
	for name, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := c(cctx); err != nil {
			failed[name] = err.Error()
		}
		cancel()
	}
	return failed
}

// checkUp is the metric the readiness collector reports.
var checkUp = prometheus.NewDesc(Namespace+"_check_up",
	"Whether a readiness check passes (1) or fails (0), run at each scrape: the process's database, NATS and Docker connections and its services.",
	[]string{"check"}, nil)

// Collector returns a collector that runs the checks at each scrape and reports each one as
// convergence_check_up{check}, so that alerts see a dependency go down without polling
// /readyz.
func (r *Readiness) Collector() prometheus.Collector { return readinessCollector{r} }

type readinessCollector struct{ r *Readiness }

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) { ch <- checkUp }

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	failed := c.r.Failures(context.Background())
	c.r.mu.Lock()
	names := make([]string, 0, len(c.r.checks))
	for name := range c.r.checks {
		names = append(names, name)
	}
	c.r.mu.Unlock()
	for _, name := range names {
		up := 1.0
		if _, down := failed[name]; down {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(checkUp, prometheus.GaugeValue, up, name)
	}
}
