package cli

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// keyColumns are what a tenant key row shows; never the key, which a rotation prints once.
var keyColumns = []column{
	{"KEY ID", "id"}, {"PREFIX", "prefix"}, {"ACTIVE", "active"}, {"CREATED", "createdAt"},
	{"LAST USED", "lastUsedAt"}, {"EXPIRES", "expiresAt"}, {"REVOKED", "revokedAt"},
}

func keysList(fs *flag.FlagSet) func(*caller, []string) error {
	paging := pageFlags(fs)
	return func(c *caller, args []string) error {
		id, err := envIDArg(args)
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodGet, "/api/v1/tenant/"+id+"/keys", paging(nil), nil)
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error { return page(c.out, a, "keys", keyColumns) })
	}
}

func keysRotate(fs *flag.FlagSet) func(*caller, []string) error {
	overlap := fs.Duration("overlap", 24*time.Hour, "how long the tenant's previous keys go on working; 0 ends them now")
	return func(c *caller, args []string) error {
		id, err := envIDArg(args)
		if err != nil {
			return err
		}
		if *overlap < 0 || *overlap%time.Second != 0 {
			return fmt.Errorf("-overlap %s: use whole seconds, 0 or more, such as 1h", *overlap)
		}
		raw, err := c.do(http.MethodPost, "/api/v1/tenant/"+id+"/keys", nil, map[string]any{"overlapSeconds": int64(*overlap / time.Second)})
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error {
			if err := vertical(c.out, object(a, "key"), append(keyColumns, column{"API KEY", "apiKey"})); err != nil {
				return err
			}
			fmt.Fprintln(c.out, "\nThe new API key is shown only now. The keys it replaces:")
			if err := table(c.out, list(a, "replacedKeys"), keyColumns); err != nil {
				return err
			}
			if a["delivered"] != true {
				_, err = fmt.Fprintln(c.out, "\nThe tenant's container was not reached now; the provisioner gives it the new key within a minute.")
			}
			return err
		})
	}
}

func keysRevoke(*flag.FlagSet) func(*caller, []string) error {
	return func(c *caller, args []string) error {
		if len(args) != 2 {
			return fmt.Errorf("give ENV_ID and KEY_ID")
		}
		id, err := envIDArg(args[:1])
		if err != nil {
			return err
		}
		raw, err := c.do(http.MethodDelete, "/api/v1/tenant/"+id+"/keys/"+url.PathEscape(args[1]), nil, nil)
		if err != nil {
			return err
		}
		return c.print(raw, func(a map[string]any) error {
			if err := vertical(c.out, object(a, "key"), keyColumns); err != nil {
				return err
			}
			return message(c.out, a)
		})
	}
}
