// Package llm is the one interface the convergence engine uses to talk to a language model,
// and the machinery every provider shares: typed errors, retries with backoff, token usage.
//
// A [Provider] turns one [Request] (system prompt, messages, an optional JSON schema for
// structured output, a token cap) into one [Response] (the reply text and the tokens it cost).
// Concrete providers live in sub-packages: openai (Chat Completions, also for Ollama, vLLM and
// llama.cpp servers), anthropic (Messages with forced tool use) and simulated (offline and
// deterministic, for development, tests and benchmarks).
//
// Providers make exactly one logical call per Complete and never retry on their own: the SDKs'
// built-in retries are disabled so that attempt counts and usage are exact. Wrap a provider in
// [Retrying] to retry rate limits, server errors and per-call timeouts with exponential backoff
// and jitter, honouring Retry-After.
//
// # Token usage
//
// Every provider reports [Usage] with the same meaning, so a token is never counted twice or
// dropped when usage is summed, priced or shown as inputTokens / outputTokens / cachedTokens /
// totalTokens:
//
//   - InputTokens is every prompt token the provider processed for the call, including the
//     tokens it read from or wrote to a prompt cache.
//   - CachedTokens is the part of InputTokens read from the cache (a subset, not an addition).
//   - CacheCreationTokens is the part of InputTokens written to the cache (a subset).
//   - OutputTokens is every generated token, including reasoning tokens.
//   - Total() is InputTokens + OutputTokens; the two cache fields are never added again.
//
// Provider fields map as follows.
//
//	OpenAI Chat Completions          Usage
//	usage.prompt_tokens              InputTokens (already includes cached tokens)
//	usage.prompt_tokens_details      CachedTokens  <- .cached_tokens
//	usage.completion_tokens          OutputTokens (includes reasoning tokens)
//	(none)                           CacheCreationTokens = 0: OpenAI bills no cache writes
//
//	Anthropic Messages               Usage
//	usage.input_tokens               InputTokens = input_tokens + cache_read_input_tokens
//	usage.cache_read_input_tokens                  + cache_creation_input_tokens, because
//	usage.cache_creation_input_tokens              Anthropic's input_tokens excludes both
//	usage.cache_read_input_tokens    CachedTokens
//	usage.cache_creation_input_tokens CacheCreationTokens
//	usage.output_tokens              OutputTokens
//
// The uncached, freshly processed prompt tokens are therefore
// InputTokens - CachedTokens - CacheCreationTokens, which is what a price list calls the
// base input rate.
package llm
