package openapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Validator checks calls to the API against the document: a request the document does not
// allow must be refused (4xx), and every answer of a documented operation must be one the
// document lists, with a body that matches its schema. Calls to paths the document does not
// describe are not its business.
type Validator struct {
	router routers.Router
}

// NewValidator returns a Validator on the document.
func NewValidator() (*Validator, error) {
	if err := Validate(); err != nil {
		return nil, err
	}
	d, err := Load()
	if err != nil {
		return nil, err
	}
	// The document's server is "/": requests to any host match.
	router, err := gorillamux.NewRouter(d)
	if err != nil {
		return nil, fmt.Errorf("route openapi.yaml: %w", err)
	}
	return &Validator{router: router}, nil
}

var options = &openapi3filter.Options{
	// Keys are the server's to judge: tests send bad ones on purpose.
	AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus:   true,
	MultiError:              true,
	SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020()},
}

// Check validates one call: req with its body, and the answer's status, header and body (nil
// for a stream, whose body is not read). It returns what is outside the document, or nil.
func (v *Validator) Check(req *http.Request, reqBody []byte, status int, header http.Header, respBody []byte) error {
	r := req.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	if len(reqBody) > 0 && r.Header.Get("Content-Type") == "" {
		r.Header.Set("Content-Type", "application/json") // The API reads every body as JSON.
	}
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		return nil // Not a documented operation.
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: options}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && (status < 400 || status >= 500) {
		return fmt.Errorf("%s %s: a request outside the document was answered %d, not refused: %w", req.Method, req.URL.Path, status, err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header,
		Body: io.NopCloser(bytes.NewReader(respBody)), Options: options}
	if respBody == nil {
		streamOptions := *options
		streamOptions.ExcludeResponseBody = true
		out.Options = &streamOptions
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("%s %s answered %d outside the document: %w\nbody: %.2000s", req.Method, req.URL.Path, status, err, respBody)
	}
	return nil
}

// Transport returns a RoundTripper that makes each call with next (http.DefaultTransport when
// nil), checks it, and reports what is outside the document with report (a test's Errorf). It
// reads a JSON answer whole, and leaves a stream's body unread.
func (v *Validator) Transport(next http.RoundTripper, report func(format string, args ...any)) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		var reqBody []byte
		if req.Body != nil {
			b, err := io.ReadAll(req.Body)
			_ = req.Body.Close()
			if err != nil {
				return nil, err
			}
			reqBody = b
			req.Body = io.NopCloser(bytes.NewReader(b))
		}
		resp, err := next.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		var respBody []byte
		if !isStream(resp.Header) {
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, err
			}
			respBody = b
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		if err := v.Check(req, reqBody, resp.StatusCode, resp.Header, respBody); err != nil {
			report("openapi: %v", err)
		}
		return resp, nil
	})
}

func isStream(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return strings.EqualFold(mt, "text/event-stream")
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestingM is what TestMain receives (*testing.M), or a wrapper of it.
type TestingM interface{ Run() int }

// Checked wraps m so that every call made through http.DefaultTransport while it runs (the
// default client's, and any client's without a transport of its own) is checked against the
// document. Run prints each call outside it and then fails the run.
func Checked(m TestingM) TestingM { return checked{m} }

type checked struct{ m TestingM }

func (c checked) Run() int {
	v, err := NewValidator()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	var mu sync.Mutex
	var problems []string
	orig := http.DefaultTransport
	http.DefaultTransport = v.Transport(orig, func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	})
	defer func() { http.DefaultTransport = orig }()
	code := c.m.Run()
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		fmt.Println("FAIL:", p)
	}
	if len(problems) > 0 {
		fmt.Printf("FAIL: %d calls outside pkg/api/openapi.yaml\n", len(problems))
		return max(code, 1)
	}
	return code
}
