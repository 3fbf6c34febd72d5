package taskspec

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// MaxWebhookURLLength bounds a webhook URL.
const MaxWebhookURLLength = 2048

// ValidateWebhookURL says what is wrong with a webhook URL, in words a caller can act on: it
// must be an absolute http or https URL with a host, at most MaxWebhookURLLength bytes, without
// credentials or a fragment. Whether the host may be dialled is decided at delivery time (see
// the converger's package webhook on request forgery).
func ValidateWebhookURL(raw string) error {
	const example = "e.g. https://example.com/hooks/convergence"
	if len(raw) > MaxWebhookURLLength {
		return fmt.Errorf("is %d bytes; use a URL of at most %d", len(raw), MaxWebhookURLLength)
	}
	if strings.TrimSpace(raw) != raw || strings.ContainsAny(raw, " \t\r\n") {
		return fmt.Errorf("must not contain spaces; give an absolute http or https URL, %s", example)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("is not a URL; give an absolute http or https URL, %s", example)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("must be an http or https URL, %s", example)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("has no host; give an absolute URL, %s", example)
	case u.User != nil:
		return fmt.Errorf("must not carry credentials; deliveries are authenticated by their signature instead")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("must not have a fragment (#...)")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", p)
		}
	}
	return nil
}
