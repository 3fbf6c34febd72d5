package converger

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convergence-dev/convergence/services/converger/engine"
	"github.com/convergence-dev/convergence/services/converger/llm"
	"github.com/convergence-dev/convergence/services/converger/llm/anthropic"
	"github.com/convergence-dev/convergence/services/converger/llm/openai"
	"github.com/convergence-dev/convergence/services/converger/llm/simulated"
	"github.com/convergence-dev/convergence/services/converger/webhook"
)

// Providers the converger can use.
const (
	ProviderAuto      = "auto"
	ProviderSimulated = "simulated"
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
)

// Config is what the converger reads at start. The zero value of a duration or count means
// its default; RegisterFlags sets the defaults as flag values.
type Config struct {
	// Provider picks the LLM provider: auto (openai when an OpenAI key is set, else anthropic
	// when an Anthropic key is set, else simulated), simulated, openai or anthropic.
	Provider  string
	OpenAI    OpenAIConfig
	Anthropic AnthropicConfig
	Simulated SimulatedConfig
	// Retry is how provider calls are retried and timed out.
	Retry llm.RetryPolicy

	// Concurrency is how many tasks one converger process runs at once: how many call its
	// provider. Up to a quarter more are being claimed or finished around them, so that the
	// database work between two tasks leaves no provider slot idle. Default
	// DefaultConcurrency.
	Concurrency int
	// MaxWaiting is how many more requests one converger process takes from the stream to
	// wait for their turn. Turns go to the waiting tenants in turn, so that a tenant with many
	// tasks waiting and one with a single task get every other one; a waiting task stays
	// queued, its timeout not begun. Requests beyond them wait in the stream, first come,
	// first served. Default DefaultMaxWaiting.
	MaxWaiting int
	// AckWait is how long a request may go unacknowledged before JetStream redelivers it;
	// heartbeats extend it while a task runs, so it is about how soon a dead converger's tasks
	// are resumed elsewhere. Default 30s.
	AckWait time.Duration
	// MaxDeliver is how many times a request is delivered before its task is failed. Default 8.
	MaxDeliver int
	// DefaultTimeout bounds a task that sets none, counted from its first start so that it
	// holds across restarts. Default 5m, at most engine.Limits.MaxTimeout (30m).
	DefaultTimeout time.Duration
	// DefaultTokenBudget bounds the tokens of a task that sets none; 0 means no bound.
	DefaultTokenBudget int64

	// Webhook configures webhook delivery.
	Webhook webhook.Config
}

// OpenAIConfig configures the OpenAI-compatible provider.
type OpenAIConfig struct {
	// Name is the provider name recorded with usage ("openai", or e.g. "ollama" for a local
	// server), which metering prices by.
	Name    string
	BaseURL string
	APIKey  string
	Model   string
}

// AnthropicConfig configures the Anthropic provider.
type AnthropicConfig struct {
	BaseURL       string
	APIKey        string
	Model         string
	PromptCaching bool
}

// SimulatedConfig configures the offline provider.
type SimulatedConfig struct {
	// Latency is how long each simulated call takes.
	Latency time.Duration
	// Scenario is the default behaviour of the simulated agents (converge, stalemate, never,
	// flat); a "[sim:...]" marker in a prompt overrides it.
	Scenario string
}

// Defaults of the fields: the flags' values, and what a zero field in a config built in code
// takes (those withDefaults fills).
const (
	defaultOpenAIModel    = "gpt-4o-mini"
	defaultAnthropicModel = "claude-sonnet-4-5"
	DefaultConcurrency    = 1000
	DefaultMaxWaiting     = 1000
	DefaultAckWait        = 30 * time.Second
	DefaultMaxDeliver     = 8
	DefaultTaskTimeout    = 5 * time.Minute
)

// RegisterFlags registers the converger's flags on fs, prefixed "converger.". Provider keys
// are flags like the rest, so they can be given as CONVERGENCE_CONVERGER_OPENAI_API_KEY and
// CONVERGENCE_CONVERGER_ANTHROPIC_API_KEY.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Provider, "converger.provider", ProviderAuto, "LLM provider: auto (openai if an OpenAI key is set, else anthropic if an Anthropic key is set, else simulated), simulated, openai, or anthropic")
	fs.StringVar(&c.OpenAI.Name, "converger.openai.name", "openai", "provider name recorded with usage, e.g. ollama or vllm for a local OpenAI-compatible server")
	fs.StringVar(&c.OpenAI.BaseURL, "converger.openai.base-url", openai.DefaultBaseURL, "OpenAI-compatible API root including /v1 (Ollama: http://host:11434/v1)")
	fs.StringVar(&c.OpenAI.APIKey, "converger.openai.api-key", "", "OpenAI API key (env CONVERGENCE_CONVERGER_OPENAI_API_KEY)")
	fs.StringVar(&c.OpenAI.Model, "converger.openai.model", defaultOpenAIModel, "model used when a request names none")
	fs.StringVar(&c.Anthropic.BaseURL, "converger.anthropic.base-url", anthropic.DefaultBaseURL, "Anthropic API root")
	fs.StringVar(&c.Anthropic.APIKey, "converger.anthropic.api-key", "", "Anthropic API key (env CONVERGENCE_CONVERGER_ANTHROPIC_API_KEY)")
	fs.StringVar(&c.Anthropic.Model, "converger.anthropic.model", defaultAnthropicModel, "model used when a request names none")
	fs.BoolVar(&c.Anthropic.PromptCaching, "converger.anthropic.prompt-caching", true, "mark each agent's transcript cacheable, so later turns read it from Anthropic's prompt cache")
	fs.DurationVar(&c.Simulated.Latency, "converger.simulated.latency", 200*time.Millisecond, "latency of each call of the simulated provider")
	fs.StringVar(&c.Simulated.Scenario, "converger.simulated.scenario", string(simulated.Converge), "default behaviour of the simulated agents: converge, stalemate, never, or flat")
	fs.IntVar(&c.Retry.MaxAttempts, "converger.call-attempts", 4, "attempts per provider call on rate limits, server errors and timeouts")
	fs.DurationVar(&c.Retry.CallTimeout, "converger.call-timeout", 2*time.Minute, "timeout of one provider call attempt")
	fs.IntVar(&c.Concurrency, "converger.concurrency", DefaultConcurrency, "tasks one converger process runs at once")
	fs.IntVar(&c.MaxWaiting, "converger.max-waiting", DefaultMaxWaiting, "more requests one converger process holds waiting for a slot, which tenants get in turn")
	fs.DurationVar(&c.AckWait, "converger.ack-wait", DefaultAckWait, "how soon a dead converger's tasks are redelivered to another")
	fs.IntVar(&c.MaxDeliver, "converger.max-deliver", DefaultMaxDeliver, "deliveries of a request before its task is failed")
	fs.DurationVar(&c.DefaultTimeout, "converger.task-timeout", DefaultTaskTimeout, "time limit of a task that sets none, at most 30m")
	fs.Int64Var(&c.DefaultTokenBudget, "converger.token-budget", 0, "token budget of a task that sets none; 0 for no bound")
	fs.DurationVar(&c.Webhook.Timeout, "converger.webhook.timeout", 10*time.Second, "timeout of one webhook delivery attempt")
	fs.DurationVar(&c.Webhook.RetryFor, "converger.webhook.retry-for", 24*time.Hour, "how long a failing webhook delivery is retried")
	fs.BoolVar(&c.Webhook.AllowPrivateTargets, "converger.webhook.allow-private-targets", false, "let webhooks reach loopback, private and link-local addresses (refused by default against request forgery)")
}

// Validate says what is wrong with the config.
func (c Config) Validate() error {
	kind, err := c.providerKind()
	if err != nil {
		return err
	}
	switch {
	case kind == ProviderOpenAI && c.OpenAI.APIKey == "" && (c.OpenAI.BaseURL == "" || c.OpenAI.BaseURL == openai.DefaultBaseURL):
		return errors.New("converger.provider is openai but no key is set: set CONVERGENCE_CONVERGER_OPENAI_API_KEY, or point converger.openai.base-url at a local server")
	case kind == ProviderAnthropic && c.Anthropic.APIKey == "":
		return errors.New("converger.provider is anthropic but no key is set: set CONVERGENCE_CONVERGER_ANTHROPIC_API_KEY")
	case c.Concurrency < 0 || c.Concurrency > 100_000:
		return fmt.Errorf("converger.concurrency %d: use 1 to 100000", c.Concurrency)
	case c.MaxWaiting < 0 || c.MaxWaiting > 100_000:
		return fmt.Errorf("converger.max-waiting %d: use 1 to 100000", c.MaxWaiting)
	case c.MaxDeliver < 0:
		return fmt.Errorf("converger.max-deliver %d: must be positive", c.MaxDeliver)
	case c.AckWait < 0 || (c.AckWait > 0 && c.AckWait < 100*time.Millisecond):
		return fmt.Errorf("converger.ack-wait %s: use at least 100ms", c.AckWait)
	case c.Simulated.Latency < 0:
		return fmt.Errorf("converger.simulated.latency %s: must not be negative", c.Simulated.Latency)
	}
	switch simulated.Scenario(c.Simulated.Scenario) {
	case "", simulated.Converge, simulated.Stalemate, simulated.NeverAgree, simulated.Flat:
	default:
		return fmt.Errorf("converger.simulated.scenario %q: choose converge, stalemate, never, or flat", c.Simulated.Scenario)
	}
	if err := c.engineConfig().Validate(); err != nil {
		return fmt.Errorf("converger: %w", err)
	}
	if err := c.Webhook.Validate(); err != nil {
		return fmt.Errorf("converger: %w", err)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Provider == "" {
		c.Provider = ProviderAuto
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxWaiting == 0 {
		c.MaxWaiting = DefaultMaxWaiting
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	return c
}

// providerKind resolves auto to the provider that will be used.
func (c Config) providerKind() (string, error) {
	switch p := strings.ToLower(strings.TrimSpace(c.Provider)); p {
	case "", ProviderAuto:
		switch {
		case c.OpenAI.APIKey != "":
			return ProviderOpenAI, nil
		case c.Anthropic.APIKey != "":
			return ProviderAnthropic, nil
		}
		return ProviderSimulated, nil
	case ProviderSimulated, ProviderOpenAI, ProviderAnthropic:
		return p, nil
	default:
		return "", fmt.Errorf("converger.provider %q: choose auto, simulated, openai, or anthropic", c.Provider)
	}
}

// engineConfig is the engine's configuration: its defaults and bounds, with the converger's
// default timeout and token budget.
func (c Config) engineConfig() engine.Config {
	return engine.Config{Limits: engine.Limits{DefaultTimeout: c.DefaultTimeout, DefaultTokenBudget: c.DefaultTokenBudget}}
}

// defaultModel is the model the provider of kind is asked for when a task names none.
func (c Config) defaultModel(kind string) string {
	switch kind {
	case ProviderOpenAI:
		return c.OpenAI.Model
	case ProviderAnthropic:
		return c.Anthropic.Model
	default:
		return simulated.DefaultModel
	}
}

// newProvider builds the configured provider, each attempt counted in reg's metrics, wrapped in
// retries. It makes no request.
func (c Config) newProvider(kind string, logger *slog.Logger, reg prometheus.Registerer) (llm.Provider, error) {
	var p llm.Provider
	switch kind {
	case ProviderOpenAI:
		op, err := openai.New(openai.Config{
			Name: c.OpenAI.Name, BaseURL: c.OpenAI.BaseURL, APIKey: c.OpenAI.APIKey, Model: c.OpenAI.Model,
			HTTPClient: &http.Client{},
		}, logger)
		if err != nil {
			return nil, err
		}
		p = op
	case ProviderAnthropic:
		ap, err := anthropic.New(anthropic.Config{
			BaseURL: c.Anthropic.BaseURL, APIKey: c.Anthropic.APIKey, Model: c.Anthropic.Model,
			PromptCaching: c.Anthropic.PromptCaching, HTTPClient: &http.Client{},
		}, logger)
		if err != nil {
			return nil, err
		}
		p = ap
	default:
		p = simulated.New(simulated.Config{Latency: c.Simulated.Latency, Scenario: simulated.Scenario(c.Simulated.Scenario)})
	}
	return llm.NewRetrying(llm.Instrumented(p, reg), c.Retry, logger), nil
}
