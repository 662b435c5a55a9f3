package regional

import (
	"slices"
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
