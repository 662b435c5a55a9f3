package regional

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The API document is checked against the server: every request the HTTP
// tests send through testEnv's client, and its answer, is validated against
// the embedded openapi.yaml (see apiCheck). A drift between the document
// and the seller fails the test that saw it.

// apiDoc is openapi.yaml loaded and validated once per test binary, with a
// router over its operations.
var apiDoc = sync.OnceValues(func() (*apiSpec, error) {
	doc, err := loadAPIDoc()
	if err != nil {
		return nil, err
	}
	// The tests' sellers listen on random ports: route on the path alone.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &apiSpec{doc: doc, router: router}, nil
})

type apiSpec struct {
	doc    *openapi3.T
	router routers.Router
}

func loadAPIDoc() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPI)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid document: %w", err)
	}
	return doc, nil
}

// checkAPI validates one exchange against the document: the request with
// its body, then the answer (status, headers, body). A request the document
// rejects (the tests send bad input on purpose) must have been refused with
// a 4xx; its answer is still validated. A route the document does not have
// must be answered 404 not_found or 405 method_not_allowed with an Error.
func checkAPI(req *http.Request, reqBody []byte, status int, header http.Header, body []byte) error {
	spec, err := apiDoc()
	if err != nil {
		return err
	}
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.ContentLength = int64(len(reqBody))
	// The security check re-reads the body through GetBody: it must be this one.
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(reqBody)), nil }
	if len(reqBody) > 0 && r.Header.Get("Content-Type") == "" {
		// The seller reads a body without Content-Type as JSON (only another
		// type is refused, 415); OpenAPI cannot say "no Content-Type".
		r.Header.Set("Content-Type", "application/json")
	}
	route, params, err := spec.router.FindRoute(r)
	if err != nil {
		var re *routers.RouteError
		if !errors.As(err, &re) {
			return err
		}
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return fmt.Errorf("undocumented route (%v) answered %d, want 404 or 405", err, status)
		}
		return checkErrorBody(spec.doc, body)
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    r,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// Authentication is tested on its own (identity_test.go, the
			// funnel's cases); here any token, or none, is let through.
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
		},
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && (status < 400 || status > 499) {
		return fmt.Errorf("a request the document rejects was answered %d: %w", status, err)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("answer %d does not match the document: %w", status, err)
	}
	// kin-openapi takes a body the document does not describe at all.
	if resp := route.Operation.Responses.Status(status); resp != nil && len(resp.Value.Content) == 0 && len(body) > 0 {
		return fmt.Errorf("answer %d has a body (%s) the document does not describe", status, header.Get("Content-Type"))
	}
	return nil
}

// checkErrorBody: body is an Error of the document.
func checkErrorBody(doc *openapi3.T, body []byte) error {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("error answer is not JSON: %w: %s", err, body)
	}
	if err := doc.Components.Schemas["Error"].Value.VisitJSON(v); err != nil {
		return fmt.Errorf("error answer is not an Error: %w", err)
	}
	return nil
}

// apiCheck is the tests' HTTP transport: it forwards each request and
// validates the exchange with checkAPI, failing the test on a mismatch.
// Requests the client gave up on (no answer) are not checked.
type apiCheck struct {
	t    testing.TB
	base http.RoundTripper
}

func (c *apiCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, bench := c.t.(*testing.B); bench {
		// Benchmarks measure the seller, not the validator.
		return c.base.RoundTrip(req)
	}
	// The body is copied as it is sent, not read ahead: some tests depend on
	// when it is read (a client that gives up once its body is sent).
	var tee *teeBody
	if req.Body != nil && req.Body != http.NoBody {
		tee = &teeBody{rc: req.Body}
		req = req.Clone(req.Context())
		req.Body = tee
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, nil // the caller sees the short body; nothing to check
	}
	if err := checkAPI(req, tee.bytes(), resp.StatusCode, resp.Header, body); err != nil {
		c.t.Errorf("openapi.yaml: %s %s: %v\nanswer body: %s", req.Method, req.URL.RequestURI(), err, body)
	}
	return resp, nil
}

// teeBody keeps what was read of a request body. The transport may still be
// writing the body when the answer comes (a 413), hence the lock.
type teeBody struct {
	rc  io.ReadCloser
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.buf.Write(p[:n])
	b.mu.Unlock()
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

func (b *teeBody) bytes() []byte {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base.
func (c *apiCheck) CloseIdleConnections() {
	if ci, ok := c.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// TestAPICheckCatchesDrift: the negative control of apiCheck. A real buy's
// answer passes; the same answer drifted from the document (a required
// field gone, a state the document does not list, a status it does not
// list, an error code it does not know, a refusal without its Retry-After,
// a request it rejects answered 2xx)
// fails validation.
func TestAPICheckCatchesDrift(t *testing.T) {
	e := newEnv(t, nil)
	tok := token(t, testSecret, "alice", "eu", e.clock.Now().Add(time.Hour))
	reqBody := []byte(`{"itemId":"phone","requestId":"a1"}`)
	req, err := http.NewRequest("POST", e.url+"/v1/flash-sale/buy", bytes.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	a := e.do("POST", "/v1/flash-sale/buy", tok, string(reqBody))
	if a.status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.status, a.body)
	}
	if err := checkAPI(req, reqBody, a.status, a.header, a.body); err != nil {
		t.Fatalf("the real answer fails validation: %v", err)
	}
	var resv map[string]any
	if err := json.Unmarshal(a.body, &resv); err != nil {
		t.Fatal(err)
	}
	drift := func(f func(m map[string]any)) []byte {
		m := maps.Clone(resv)
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	errBody := []byte(`{"code":"sold_out","message":"m"}`)
	for _, tc := range []struct {
		name    string
		reqBody []byte
		status  int
		body    []byte
	}{
		{"required field missing", reqBody, 201, drift(func(m map[string]any) { delete(m, "region") })},
		{"undocumented state", reqBody, 201, drift(func(m map[string]any) { m["state"] = "lost" })},
		{"wrong type", reqBody, 201, drift(func(m map[string]any) { m["expiresAt"] = 12 })},
		{"undocumented status", reqBody, http.StatusTeapot, errBody},
		{"undocumented error code", reqBody, 410, []byte(`{"code":"gone_fishing","message":"m"}`)},
		{"error without message", reqBody, 410, []byte(`{"code":"sold_out"}`)},
		{"503 without Retry-After", reqBody, 503, []byte(`{"code":"quota_pending","message":"m","retryAfterMs":250}`)},
		{"rejected request answered 201", []byte(`{"itemId":"phone"}`), 201, a.body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAPI(req, tc.reqBody, tc.status, a.header, tc.body)
			if err == nil {
				t.Fatalf("drift not caught: %d %s", tc.status, tc.body)
			}
			t.Logf("caught: %s", strings.SplitN(err.Error(), "\n", 2)[0])
		})
	}
}
