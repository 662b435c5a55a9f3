package regional

import (
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestOpenAPIDocument: the served document parses, lists every route the
// server has and every error code it answers with.
func TestOpenAPIDocument(t *testing.T) {
	var doc struct {
		OpenAPI    string                    `yaml:"openapi"`
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas struct {
				Status struct {
					Required   []string `yaml:"required"`
					Properties struct {
						State struct {
							Enum []string `yaml:"enum"`
						} `yaml:"state"`
					} `yaml:"properties"`
				} `yaml:"Status"`
				Error struct {
					Properties struct {
						Code struct {
							Enum []string `yaml:"enum"`
						} `yaml:"code"`
					} `yaml:"properties"`
				} `yaml:"Error"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI[:2] != "3." {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	routes := map[string]string{
		"/v1/flash-sale/buy": "post", "/v1/flash-sale/status": "get",
		"/v1/flash-sale/reservations/{id}/confirm": "post", "/v1/flash-sale/reservations/{id}/cancel": "post",
		"/v1/flash-sale/requests/{requestId}": "get",
		"/healthz":                            "get", "/readyz": "get", "/metrics": "get", "/openapi.yaml": "get",
	}
	for path, method := range routes {
		if _, ok := doc.Paths[path][method]; !ok {
			t.Errorf("%s %s is not documented", method, path)
		}
	}
	if len(doc.Paths) != len(routes) {
		t.Errorf("document has %d paths, server %d", len(doc.Paths), len(routes))
	}
	codes := []string{
		CodeBadJSON, CodeBodyTooLarge, CodeUnsupportedMedia, CodeBadItemID, CodeBadUserID, CodeBadRequestID,
		CodeBadReservationID, CodeUnauthenticated, CodeInvalidToken, CodeUserMismatch, CodeNotYours,
		CodeUnknownHomeRegion, CodeWrongRegion, CodeUnknownSale, CodeUnknownResv, CodeAlreadyBought,
		CodeRequestIDConflict, CodeNotActive, CodeSaleEnded, CodeSoldOut, CodeNotStarted, CodeRateLimited,
		CodeNotReady, CodeHalted, CodePaused, CodeUnavailable, "not_found", "method_not_allowed",
		CodePaymentUnavailable, CodePaymentDeclined, CodePaymentRejected, CodeQuotaPending, CodeAllReserved,
		CodeOverloaded, CodeOutcomeUnknown, CodeNotYourRequest,
	}
	enum := doc.Components.Schemas.Error.Properties.Code.Enum
	for _, c := range codes {
		if !slices.Contains(enum, c) {
			t.Errorf("error code %s is not in the document", c)
		}
	}
	if len(enum) != len(codes) {
		t.Errorf("document lists %d codes, server has %d", len(enum), len(codes))
	}
	// Every phase the status can report is documented, and nothing else.
	states := doc.Components.Schemas.Status.Properties.State.Enum
	for p := PhaseUpcoming; p <= PhaseAllReserved; p++ {
		if !slices.Contains(states, p.String()) {
			t.Errorf("status state %s is not in the document", p)
		}
	}
	if len(states) != int(PhaseAllReserved)+1 {
		t.Errorf("document lists %d states, server has %d", len(states), PhaseAllReserved+1)
	}
	for _, f := range []string{"remaining", "regionRemaining"} {
		if !slices.Contains(doc.Components.Schemas.Status.Required, f) {
			t.Errorf("status field %s is not documented as required", f)
		}
	}
}

// TestOpenAPILint: the document's own lint (run by `make lint`). It is a
// valid OpenAPI 3 document; every operation has a unique operationId, tags,
// a summary and a description; its tags are declared, and every declared
// tag is used; every component is reached from an operation.
func TestOpenAPILint(t *testing.T) {
	doc, err := loadAPIDoc() // includes doc.Validate
	if err != nil {
		t.Fatal(err)
	}
	if doc.Info.Contact == nil {
		t.Errorf("info has no contact")
	}
	declared := map[string]bool{}
	for _, tag := range doc.Tags {
		if tag.Description == "" {
			t.Errorf("tag %s has no description", tag.Name)
		}
		declared[tag.Name] = false
	}
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.OperationID == "" {
				t.Errorf("%s has no operationId", name)
			} else if other, dup := ids[op.OperationID]; dup {
				t.Errorf("%s and %s share operationId %s", name, other, op.OperationID)
			}
			ids[op.OperationID] = name
			if op.Summary == "" {
				t.Errorf("%s has no summary", name)
			}
			if op.Description == "" {
				t.Errorf("%s has no description", name)
			}
			if len(op.Tags) == 0 {
				t.Errorf("%s has no tags", name)
			}
			for _, tag := range op.Tags {
				if _, ok := declared[tag]; !ok {
					t.Errorf("%s: tag %s is not declared", name, tag)
				}
				declared[tag] = true
			}
		}
	}
	for tag, used := range declared {
		if !used {
			t.Errorf("tag %s is declared and not used", tag)
		}
	}

	// Components reached from the paths and the security requirements,
	// following references between components.
	var raw struct {
		Paths      any                       `yaml:"paths"`
		Security   []map[string]any          `yaml:"security"`
		Components map[string]map[string]any `yaml:"components"`
	}
	if err := yaml.Unmarshal(openAPI, &raw); err != nil {
		t.Fatal(err)
	}
	reached := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if ref, ok := x.(string); ok && k == "$ref" {
					const prefix = "#/components/"
					if !strings.HasPrefix(ref, prefix) {
						t.Errorf("reference %s is not to a component", ref)
						continue
					}
					if !reached[ref] {
						reached[ref] = true
						kind, name, _ := strings.Cut(strings.TrimPrefix(ref, prefix), "/")
						walk(raw.Components[kind][name])
					}
				}
				if k == "security" {
					if reqs, ok := x.([]any); ok {
						for _, r := range reqs {
							for scheme := range r.(map[string]any) {
								reached["#/components/securitySchemes/"+scheme] = true
							}
						}
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(raw.Paths)
	for _, r := range raw.Security {
		for scheme := range r {
			reached["#/components/securitySchemes/"+scheme] = true
		}
	}
	for kind, comps := range raw.Components {
		for name := range comps {
			if ref := "#/components/" + kind + "/" + name; !reached[ref] {
				t.Errorf("component %s is not used", ref)
			}
		}
	}
}
