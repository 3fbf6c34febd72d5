// Command tenant is the minimal default tenant application: a static HTTP server that answers
// GET /health so the provisioner can tell when a tenant container is ready. It stands in for the
// full template app (DESIGN.md section 4) until that lands, and uses only the standard library so
// that it builds into a FROM scratch image.
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
	srv := &http.Server{
		Handler:           newHandler(),
		ReadHeaderTimeout: 5 * time.Second,
	}
	log.Info("tenant listening",
		"addr", ln.Addr().String(),
		"envId", os.Getenv("CONVERGENCE_ENV_ID"),
		"apiUrl", os.Getenv("CONVERGENCE_API_URL"),
		"apiKeySet", os.Getenv("CONVERGENCE_API_KEY") != "")

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

// newHandler returns the tenant's routes.
func newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
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
