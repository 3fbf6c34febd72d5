// Package client is the Go SDK for Convergence's tenant API: what a tenant app uses to ask two
// agents to converge on a prompt and to follow the task to its result.
//
// A tenant container gets its settings from the provisioner in the environment, so FromEnv is
// all it needs:
//
//	c, err := client.FromEnv() // CONVERGENCE_API_URL, CONVERGENCE_API_KEY, CONVERGENCE_ENV_ID
//	task, err := c.Design(ctx, "A login flow for a banking app",
//		client.WithRoles("Security Expert", "UX Designer"))
//	fmt.Println(task.Result.ConvergenceScore, task.Result.Output)
//
// Every call takes a context and sends an X-Request-ID. Calls are retried on 429 and 503,
// honouring Retry-After, a bounded number of times. Failures are typed: *ClientError for 4xx
// answers, *RateLimitError for 429 once retries are spent, *ServerError for 5xx; each wraps an
// *APIError with the status, code, message and request ID, so errors.As finds either.
//
// Me, Usage and WebhookSecret answer who the key belongs to, what it used, and the secret the
// platform signs its webhooks with; a receiver checks a delivery with VerifyWebhook:
//
//	body, _ := io.ReadAll(r.Body)
//	if err := client.VerifyWebhook(r.Header, body, 0, secret.Secret); err != nil {
//		http.Error(w, "not from Convergence", http.StatusUnauthorized)
//		return
//	}
//
// The package depends on the standard library and pkg/events only.
package client
