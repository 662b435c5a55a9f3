package provider

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"flashsale/coordinator/api"
)

// client is the provider's connection to the coordinator, shared by every
// resource and data source of one provider configuration.
type client struct {
	api     api.CoordinatorClient
	conn    *grpc.ClientConn
	addr    string
	timeout time.Duration
}

// bearer attaches the admin token to every call. The coordinator listens on
// loopback or behind a TLS-terminating proxy, as for flashctl.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func newClient(addr, token string, timeout time.Duration) (*client, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	return &client{api: api.NewCoordinatorClient(conn), conn: conn, addr: addr, timeout: timeout}, nil
}

// ctx bounds one call by the provider's timeout.
func (c *client) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.timeout)
}

// explain turns a gRPC error into a diagnostic detail that says what to do.
func (c *client) explain(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("The coordinator at %s cannot be reached or does not lead (%s). Is it running (`make run` for the dev stack)? Check the provider's address or FLASHSALE_ADDR.", c.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Sprintf("The coordinator at %s did not answer within the provider's timeout %v.", c.addr, c.timeout)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Sprintf("The coordinator refused the call (%s): set the provider's token or FLASHSALE_TOKEN to the admin token.", st.Message())
	}
	return st.Message()
}
