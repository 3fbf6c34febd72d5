// Command probe reports what answers from inside a container's network namespace: the tests
// run it in a container sharing a tenant's network (`--network container:<tenant>`) to see
// what a tenant can reach. Each argument is a target:
//
//	tcp://HOST:PORT   a TCP connection is opened, or not
//	http://HOST:PORT/PATH   a GET, with Authorization: Bearer $PROBE_BEARER when that is set
//
// It prints one JSON line per target, {"target", "answered", "status", "error"}, waiting at
// most two seconds for each, and exits 0.
package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

type result struct {
	Target   string `json:"target"`
	Answered bool   `json:"answered"`
	Status   int    `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
}

const wait = 2 * time.Second

func main() {
	enc := json.NewEncoder(os.Stdout)
	client := &http.Client{Timeout: wait}
	for _, target := range os.Args[1:] {
		r := result{Target: target}
		u, err := url.Parse(target)
		switch {
		case err != nil:
			r.Error = err.Error()
		case u.Scheme == "tcp":
			conn, err := (&net.Dialer{Timeout: wait}).DialContext(context.Background(), "tcp", u.Host) //nolint:gosec // Probing the targets the test names is the point.
			if err != nil {
				r.Error = err.Error()
			} else {
				r.Answered = true
				_ = conn.Close()
			}
		default:
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, target, nil) //nolint:gosec // As above; the client's timeout bounds it.
			if err != nil {
				r.Error = err.Error()
				break
			}
			if token := os.Getenv("PROBE_BEARER"); token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := client.Do(req) //nolint:gosec // As above.
			if err != nil {
				r.Error = err.Error()
				break
			}
			_ = resp.Body.Close()
			r.Answered, r.Status = true, resp.StatusCode
		}
		_ = enc.Encode(r)
	}
}
