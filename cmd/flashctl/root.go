package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"flashsale/coordinator/api"
)

// globals are the flags every command shares.
type globals struct {
	addr    string
	token   string
	output  string
	timeout time.Duration
}

var g globals

func newRootCmd() *cobra.Command {
	g = globals{}
	root := &cobra.Command{
		Use:           "flashctl",
		Short:         "Operate flash sales: sales, status, rebalance, moves, drains, readiness",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("--output %q: use table or json", g.output)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.addr, "addr", envOr("FLASHCTL_ADDR", "127.0.0.1:7400"), "coordinator gRPC address (env FLASHCTL_ADDR)")
	pf.StringVar(&g.token, "token", os.Getenv("FLASHSALE_TOKEN"), "admin bearer token (env FLASHSALE_TOKEN)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "deadline of each call to the coordinator")
	root.AddCommand(newSaleCmd(), newStatusCmd(), newRebalanceCmd(), newMoveCmd(), newDrainCmd(),
		newReadinessCmd(), newTokenCmd(), newOrdersCmd())
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// bearer attaches the admin token to every call. The coordinator listens on
// loopback or behind a TLS-terminating proxy, so plaintext is allowed.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// client is one connection to the coordinator.
type client struct {
	api.CoordinatorClient
	conn *grpc.ClientConn
}

func dial() (*client, error) {
	conn, err := grpc.NewClient(g.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(g.token)))
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", g.addr, err)
	}
	return &client{CoordinatorClient: api.NewCoordinatorClient(conn), conn: conn}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// call runs f with a connected client and the per-call deadline, and turns
// gRPC errors into one line that says what to do.
func call(ctx context.Context, f func(ctx context.Context, c *client) error) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return explain(f(ctx, c))
}

func explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the coordinator at %s (%s): is it running? Start one with `make run`, or point --addr / FLASHCTL_ADDR at it", g.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("the coordinator at %s did not answer within --timeout %v", g.addr, g.timeout)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("the coordinator refused the call (%s): pass the admin token with --token or FLASHSALE_TOKEN", st.Message())
	case codes.NotFound:
		return fmt.Errorf("%s (`flashctl sale list` shows the sales)", st.Message())
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return errors.New(st.Message())
	}
	return fmt.Errorf("%s: %s", st.Code(), st.Message())
}

// needArgs is cobra.ExactArgs with a message that names what is missing.
func needArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%s needs %d argument(s): %v (got %d); see `%s --help`", cmd.Name(), len(names), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}
