package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/convergence-dev/convergence/internal/httpx"
)

// rateClass names a bucket of each tenant.
type rateClass string

// The rate classes.
const (
	classCreate rateClass = "converge.create"
	classRead   rateClass = "converge.read"
)

// limiter is a token bucket per tenant and class, kept in PostgreSQL so that every API replica
// draws from the same bucket.
//
// Why PostgreSQL and not a JetStream KV bucket: the request already goes to PostgreSQL (the
// tenant's key is looked up there), and one INSERT ... ON CONFLICT DO UPDATE takes a token
// atomically in one round trip, with the row lock ordering a tenant's concurrent requests on
// whichever replica they land and the database's clock measuring the refill, so replicas'
// clocks do not matter. A KV bucket needs a read and a compare-and-swap, retried under
// contention, for the same effect. The table is UNLOGGED, so a request costs no WAL.
//
// A tenant's bucket of task creations is its organization's plan's (requestsPerMinute, burst);
// its bucket of reads is the platform's. api_rate_limits overrides either for one tenant.
type limiter struct {
	pool  *pgxpool.Pool
	plans *plans
	read  bucketLimit
}

type bucketLimit struct {
	perMinute float64
	burst     int
}

func newLimiter(pool *pgxpool.Pool, plans *plans, cfg RateLimits) *limiter {
	return &limiter{pool: pool, plans: plans, read: bucketLimit{cfg.ReadPerMinute, cfg.ReadBurst}}
}

// limitOf is tenant t's bucket of class, unless api_rate_limits overrides it.
func (l *limiter) limitOf(t Tenant, class rateClass) bucketLimit {
	if class == classCreate {
		p := l.plans.limits(t.Plan)
		return bucketLimit{p.RequestsPerMinute, p.Burst}
	}
	return l.read
}

// decision is the outcome of taking a token.
type decision struct {
	allowed    bool
	remaining  float64 // tokens left after this request
	burst      float64
	retryAfter time.Duration // when denied: until a token is there
}

// take takes a token from tenant envID's bucket of class, whose limit is def unless
// api_rate_limits overrides it. The bucket refills at its rate up to its burst, on the
// database's clock; a request that finds less than one token is denied and takes nothing.
func (l *limiter) take(ctx context.Context, envID int64, class rateClass, def bucketLimit) (decision, error) {
	var d decision
	var rate float64
	err := l.pool.QueryRow(ctx, `
		WITH lim AS (
			SELECT coalesce(o.per_minute, $3) / 60.0 AS rate, coalesce(o.burst, $4)::float8 AS burst
			FROM (VALUES (1)) AS one (x)
			LEFT JOIN api_rate_limits o ON o.env_id = $1 AND o.class = $2)
		INSERT INTO api_rate_buckets AS b (env_id, class, tokens, rate, burst, allowed, updated_at)
		SELECT $1, $2, lim.burst - 1, lim.rate, lim.burst, true, now() FROM lim
		ON CONFLICT (env_id, class) DO UPDATE SET
			tokens = CASE
				WHEN least(EXCLUDED.burst, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * EXCLUDED.rate) >= 1
				THEN least(EXCLUDED.burst, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * EXCLUDED.rate) - 1
				ELSE least(EXCLUDED.burst, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * EXCLUDED.rate) END,
			allowed = least(EXCLUDED.burst, b.tokens + greatest(0, extract(epoch FROM now() - b.updated_at)) * EXCLUDED.rate) >= 1,
			rate = EXCLUDED.rate, burst = EXCLUDED.burst,
			updated_at = greatest(b.updated_at, now())
		RETURNING allowed, tokens, rate, burst`,
		envID, string(class), def.perMinute, def.burst).Scan(&d.allowed, &d.remaining, &rate, &d.burst)
	if err != nil {
		return decision{}, fmt.Errorf("rate limit: %w", err)
	}
	if !d.allowed {
		wait := (1 - d.remaining) / rate
		d.retryAfter = time.Duration(math.Max(1, math.Ceil(wait))) * time.Second
	}
	return d, nil
}

// middleware admits a tenant's request if its bucket of class has a token, and answers 429
// with Retry-After otherwise. Every answer says the bucket's size and what is left in
// RateLimit-Limit and RateLimit-Remaining.
func (l *limiter) middleware(class rateClass) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			t := tenantOf(c)
			d, err := l.take(c.Request().Context(), t.EnvID, class, l.limitOf(t, class))
			if err != nil {
				return err
			}
			h := c.Response().Header()
			h.Set("RateLimit-Limit", strconv.Itoa(int(d.burst)))
			h.Set("RateLimit-Remaining", strconv.Itoa(int(math.Floor(d.remaining))))
			if !d.allowed {
				what, wayOut := "requests to tasks", ""
				if class == classCreate {
					what, wayOut = "task creations", fmt.Sprintf(", or move the organization to a plan with a higher rate (it is on %q)", t.Plan)
				}
				return &httpx.Error{
					Status: http.StatusTooManyRequests,
					Code:   "rate_limited",
					Message: fmt.Sprintf("too many %s: the limit is %d at once, refilled over time; retry after %d seconds%s",
						what, int(d.burst), int(d.retryAfter/time.Second), wayOut),
					RetryAfter: d.retryAfter,
				}
			}
			return next(c)
		}
	}
}
