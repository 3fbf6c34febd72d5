package cli

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/convergence-dev/convergence/pkg/api"
)

// keyColumns are what a tenant key row shows; never the key, which a rotation prints once.
var keyColumns = []column[api.Key]{
	{"KEY ID", func(k api.Key) any { return k.ID }},
	{"PREFIX", func(k api.Key) any { return k.Prefix }},
	{"ACTIVE", func(k api.Key) any { return k.Active }},
	{"CREATED", func(k api.Key) any { return k.CreatedAt }},
	{"LAST USED", func(k api.Key) any { return k.LastUsedAt }},
	{"EXPIRES", func(k api.Key) any { return k.ExpiresAt }},
	{"REVOKED", func(k api.Key) any { return k.RevokedAt }},
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
		return show(c, raw, func(a api.KeyList) error { return page(c.out, a.Keys, a.NextCursor, keyColumns) })
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
		seconds := int(*overlap / time.Second)
		raw, err := c.do(http.MethodPost, "/api/v1/tenant/"+id+"/keys", nil, api.RotateTenantKeyJSONBody{OverlapSeconds: &seconds})
		if err != nil {
			return err
		}
		return show(c, raw, func(a api.KeyRotation) error {
			withKey := append(slices.Clone(keyColumns), column[api.Key]{"API KEY", func(k api.Key) any { return k.APIKey }})
			if err := vertical(c.out, a.Key, withKey); err != nil {
				return err
			}
			fmt.Fprintln(c.out, "\nThe new API key is shown only now. The keys it replaces:")
			if err := table(c.out, a.ReplacedKeys, keyColumns); err != nil {
				return err
			}
			if !a.Delivered {
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
		return show(c, raw, func(a api.KeyAnswer) error {
			if err := vertical(c.out, a.Key, keyColumns); err != nil {
				return err
			}
			return message(c.out, a.Message)
		})
	}
}
