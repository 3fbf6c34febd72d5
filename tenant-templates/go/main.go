// Command tenant is the default tenant application: a static HTTP server on the tenant SDK
// (pkg/client) that a tenant developer starts from. It calls the Convergence platform with the
// tenant's own key, which the provisioner gives it as a file (CONVERGENCE_API_KEY_FILE, with
// CONVERGENCE_API_URL and CONVERGENCE_ENV_ID in its environment):
//
//	POST /api/converge          {"prompt", "agentARole", "agentBRole", "context", "maxRounds", "async", "type"}
//	POST /api/design, /api/review, /api/decide   the same, with the type set by the path
//	GET  /api/converge/{taskId} the task as it stands
//	GET  /health                liveness, for the provisioner and the image's HEALTHCHECK
//
// A finished task is answered 200 with its convergenceScore, stopReason and output beside the
// task itself; a running one 202. Errors have the platform's envelope: the platform's 4xx are
// passed through with its code and message (429 with Retry-After), its 5xx answered 502.
//
// It listens on $PORT (8080 when unset) and stops gracefully on SIGTERM or SIGINT. Run with
// -healthcheck it instead probes a running instance on the same port and exits 0 when it is
// healthy, which is what the image's HEALTHCHECK runs (a scratch image has no curl).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/convergence-dev/convergence/pkg/client"
)

// shutdownGrace bounds how long in-flight requests may take once a stop signal arrives; it is
// shorter than the provisioner's default stop grace period so the process exits on its own.
const shutdownGrace = 5 * time.Second

func main() {
	healthcheck := flag.Bool("healthcheck", false, "probe http://127.0.0.1:$PORT/health and exit 0 when it answers 200")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	addr := net.JoinHostPort("", port)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if *healthcheck {
		if err := probe(ctx, "http://"+net.JoinHostPort("127.0.0.1", port)+"/health"); err != nil {
			fmt.Fprintln(os.Stderr, "unhealthy:", err)
			os.Exit(1)
		}
		return
	}

	if err := serve(ctx, log, addr); err != nil {
		log.Error("tenant stopped", "err", err)
		os.Exit(1)
	}
}

// serve answers on addr until ctx is done, then drains in-flight requests for at most
// shutdownGrace. It returns nil after a clean shutdown.
func serve(ctx context.Context, log *slog.Logger, addr string) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var platform Platform
	if c, err := client.FromEnv(
		// A caller of this app waits for its answer: retry a 429 or 503 of the platform briefly,
		// and otherwise hand the caller the Retry-After.
		client.WithRetries(2, 5*time.Second),
		client.WithUserAgent("convergence-tenant-go"),
	); err != nil {
		log.Warn("the platform API is not configured; /api answers 503", "err", err)
	} else {
		platform = c
	}
	srv := &http.Server{
		Handler:           newHandler(platform, log),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A synchronous convergence answers after the platform's wait (a minute by default),
		// so no WriteTimeout: each call to the platform is bounded by callTimeout instead.
		IdleTimeout: 2 * time.Minute,
	}
	log.Info("tenant listening",
		"addr", ln.Addr().String(),
		"envId", os.Getenv("CONVERGENCE_ENV_ID"),
		"apiUrl", os.Getenv("CONVERGENCE_API_URL"),
		"apiKeySet", platform != nil)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("tenant stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("tenant stopped")
	return nil
}

// newHandler returns the tenant's routes. platform may be nil: then /health answers and the
// API routes answer 503.
func newHandler(platform Platform, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	(&app{platform: platform, log: log}).routes(mux)
	return mux
}

// probe GETs url and returns nil when it answers 200.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The URL is the app's own loopback address: there is no request forgery to fear.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil) //nolint:gosec // G704, see above.
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // G704, see above.
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	return nil
}
