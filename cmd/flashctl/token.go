package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"flashsale/internal/devtoken"
)

func newTokenCmd() *cobra.Command {
	var user, region, secret string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:     "token --user U --region R",
		Short:   "Sign a shopper token for the dev stack (HS256 with the dev secret)",
		Example: `  curl -H "Authorization: Bearer $(flashctl token --user alice --region us)" ...`,
		Args:    needArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if secret == "" {
				return fmt.Errorf("no signing secret: pass --secret or set FLASHSALE_JWT_SECRET (`flashsale dev` prints it)")
			}
			t, err := devtoken.Sign([]byte(secret), user, region, time.Now(), ttl)
			if err != nil {
				return fmt.Errorf("%w: pass --user and --region", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), t)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "shopper user id (the token's sub)")
	cmd.Flags().StringVar(&region, "region", "", "the shopper's home region")
	cmd.Flags().StringVar(&secret, "secret", os.Getenv("FLASHSALE_JWT_SECRET"), "HS256 secret (env FLASHSALE_JWT_SECRET)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime")
	return cmd
}
