// Package cli is the operator's command line: the "tenant", "org", "invoice", "usage" and "audit" commands of the
// convergence binary. Each talks to the admin API over HTTP with the admin token and prints a
// readable table, or the API's JSON with -o json.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/convergence-dev/convergence/pkg/api"
)

// Env supplies defaults from the environment: the CLI's flags read CONVERGENCE_API_URL,
// CONVERGENCE_ADMIN_TOKEN and CONVERGENCE_DATA_DIR through it.
type Env func(string) (string, bool)

// Run runs one command, such as ["tenant", "list", "-status", "running"]. It returns an error
// that says what went wrong; the API's error answers are shown with their request ID.
func Run(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return errors.New("no command: use tenant, org, invoice, usage or audit")
	}
	group, rest := args[0], args[1:]
	switch group {
	case "usage":
		return runCommand(ctx, usageCommand, rest, env, stdout, stderr)
	case "audit":
		return runCommand(ctx, auditCommand, rest, env, stdout, stderr)
	case "tenant", "org", "invoice":
		if len(rest) == 0 {
			return fmt.Errorf("%s: name a subcommand: %s", group, strings.Join(subcommandNames(group), ", "))
		}
		for _, c := range commands {
			// A name may be two words: "tenant keys rotate".
			words := strings.Fields(c.name)
			if c.group == group && len(rest) >= len(words) && slices.Equal(words, rest[:len(words)]) {
				return runCommand(ctx, c, rest[len(words):], env, stdout, stderr)
			}
		}
		return fmt.Errorf("%s: unknown subcommand %q: use %s", group, rest[0], strings.Join(subcommandNames(group), ", "))
	}
	return fmt.Errorf("unknown command %q", group)
}

// command is one CLI command: its flags and what it does with the API.
type command struct {
	group, name string
	usage       string
	flags       func(fs *flag.FlagSet) func(c *caller, args []string) error
}

func subcommandNames(group string) []string {
	var names []string
	for _, c := range commands {
		if c.group == group {
			names = append(names, c.name)
		}
	}
	return names
}

func runCommand(ctx context.Context, cmd command, args []string, env Env, stdout, stderr io.Writer) error {
	name := strings.TrimSpace(cmd.group + " " + cmd.name)
	fs := flag.NewFlagSet("convergence "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: convergence %s %s\n", name, cmd.usage)
		fs.PrintDefaults()
	}
	c := &caller{ctx: ctx, out: stdout, http: &http.Client{Timeout: 10 * time.Minute}}
	fs.StringVar(&c.apiURL, "api-url", envOr(env, "CONVERGENCE_API_URL", "http://localhost:3000"), "the platform API (env CONVERGENCE_API_URL)")
	fs.StringVar(&c.token, "admin-token", envOr(env, "CONVERGENCE_ADMIN_TOKEN", ""), "admin token (env CONVERGENCE_ADMIN_TOKEN; default: the one saved in the data dir)")
	dataDir := fs.String("data-dir", envOr(env, "CONVERGENCE_DATA_DIR", ".convergence"), "where make run saved the admin token")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	run := cmd.flags(fs)
	// Flags may follow positional arguments: "tenant status 7 -o json".
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("-o %q: use table or json", c.output)
	}
	if c.token == "" {
		b, err := os.ReadFile(filepath.Join(*dataDir, "admin-token"))
		if err != nil {
			return fmt.Errorf("no admin token: set CONVERGENCE_ADMIN_TOKEN or -admin-token (make run saves one in %s)", filepath.Join(*dataDir, "admin-token"))
		}
		c.token = strings.TrimSpace(string(b))
	}
	return run(c, positional)
}

func envOr(env Env, key, def string) string {
	if v, ok := env(key); ok && v != "" {
		return v
	}
	return def
}

// caller makes the admin API calls of one command.
type caller struct {
	ctx    context.Context
	out    io.Writer
	http   *http.Client
	apiURL string
	token  string
	output string
}

// apiError is an error answer, shown with what the API said.
type apiError struct {
	status                   int
	code, message, requestID string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%d %s, request %s)", e.message, e.status, e.code, e.requestID)
}

// do sends a request and returns the raw body of a success answer.
func (c *caller) do(method, path string, query url.Values, body any) ([]byte, error) {
	resp, err := c.send(method, path, query, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		return nil, decodeError(resp, raw)
	}
	return raw, nil
}

func (c *caller) send(method, path string, query url.Values, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	u := strings.TrimRight(c.apiURL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(c.ctx, method, u, r)
	if err != nil {
		return nil, fmt.Errorf("api-url %q: %w", c.apiURL, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the API at %s does not answer: %w; is the platform running (make run)?", c.apiURL, err)
	}
	return resp, nil
}

func decodeError(resp *http.Response, raw []byte) error {
	var env api.Error
	_ = json.Unmarshal(raw, &env)
	e := &apiError{status: resp.StatusCode, code: env.Error.Code, message: env.Error.Message, requestID: env.Error.RequestID}
	if e.message == "" {
		e.message = http.StatusText(resp.StatusCode)
	}
	return e
}

// show writes raw as indented JSON with -o json, or decodes it as the answer it is, a T, and
// calls view with it.
func show[T any](c *caller, raw []byte, view func(T) error) error {
	if c.output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := c.out.Write(buf.Bytes())
		return err
	}
	var answer T
	if err := json.Unmarshal(raw, &answer); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return view(answer)
}
