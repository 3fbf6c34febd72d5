// ConvergenceClient: the JavaScript client of Convergence's tenant API. An ES module with no
// dependencies beyond Node's standard library (Node 18 or newer: fetch, Web Crypto, streams).
//
//   import { ConvergenceClient } from "./convergence.mjs";
//   const client = new ConvergenceClient({ apiKey: process.env.CONVERGENCE_API_KEY });
//   const task = await client.design("A login flow for a banking app",
//     { agentARole: "Security Expert", agentBRole: "UX Designer" });
//   console.log(task.result.convergenceScore, task.result.output);
//
// Every call sends an X-Request-ID; a create sends an Idempotency-Key, kept across its retries,
// so a retried create never runs or bills twice. 429 and 503 answers are retried, honouring
// Retry-After, a bounded number of times. Failures throw ConvergenceError with the status, code,
// message and request id the API answered.

import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

/** The error the API answered: status, code, message, requestId, retryAfter (seconds). */
export class ConvergenceError extends Error {
  constructor(status, code, message, requestId, retryAfter) {
    super(`convergence: ${status} ${code}: ${message}`);
    this.name = "ConvergenceError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

const FINISHED = new Set(["completed", "failed", "cancelled"]);

export class ConvergenceClient {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl] the API, default CONVERGENCE_API_URL or http://localhost:3000
   * @param {string} [options.apiKey] the tenant key, default CONVERGENCE_API_KEY
   * @param {string} [options.apiKeyFile] a file holding the key, read at each call so that the
   *   platform's key rotations need no restart; default CONVERGENCE_API_KEY_FILE (a tenant
   *   container's), which wins over a key
   * @param {number} [options.retries] retries of a 429 or 503 answer, default 3
   * @param {number} [options.maxWaitMs] the longest wait before a retry, default 30000
   * @param {typeof fetch} [options.fetch] the fetch to use, default the global one
   */
  constructor({ baseUrl, apiKey, apiKeyFile, retries = 3, maxWaitMs = 30_000, fetch: f } = {}) {
    this.baseUrl = (baseUrl ?? process.env.CONVERGENCE_API_URL ?? "http://localhost:3000").replace(/\/+$/, "");
    this.apiKeyFile = apiKeyFile ?? (apiKey ? undefined : process.env.CONVERGENCE_API_KEY_FILE);
    this.apiKey = apiKey ?? process.env.CONVERGENCE_API_KEY;
    if (this.apiKeyFile) this.#key(); // A file that cannot be read fails here, not at the first call.
    else if (!this.apiKey) throw new Error("convergence: no API key: pass apiKey or apiKeyFile, or set CONVERGENCE_API_KEY(_FILE)");
    this.retries = retries;
    this.maxWaitMs = maxWaitMs;
    this.fetch = f ?? globalThis.fetch;
  }

  /**
   * Runs a task: converge(prompt, options) or converge({prompt, ...options}). Resolves with the
   * finished task (waiting past the API's sync wait), or at once with options.async. call may
   * carry the requestId and idempotencyKey to send, e.g. those of the request an app serves.
   */
  async converge(prompt, options = {}, call = {}) {
    const request = typeof prompt === "string" ? { ...options, prompt } : { ...prompt };
    if (!request.prompt) throw new Error("convergence: a request needs a prompt");
    const { status, body } = await this.#call("POST", "/api/v1/converge", request, { ...call, create: true });
    if (status === 202 && !request.async) return this.wait(body.taskId);
    return body.task;
  }

  // The shortcuts take the prompt and options, or, as the second argument, the context text.
  design(prompt, options, call) { return this.#typed("design", prompt, options, call); }
  review(prompt, options, call) { return this.#typed("review", prompt, options, call); }
  decide(prompt, options, call) { return this.#typed("decide", prompt, options, call); }
  plan(prompt, options, call) { return this.#typed("plan", prompt, options, call); }
  analyze(prompt, options, call) { return this.#typed("analyze", prompt, options, call); }
  generate(prompt, options, call) { return this.#typed("generate", prompt, options, call); }

  #typed(type, prompt, options = {}, call = {}) {
    const extra = typeof options === "string" ? { context: options } : options;
    return this.converge(prompt, { ...extra, type }, call);
  }

  /** The task as it stands. */
  async task(taskId, call = {}) {
    return (await this.#call("GET", `/api/v1/converge/${encodeURIComponent(taskId)}`, undefined, call)).body.task;
  }

  /** Polls the task until it has finished (every pollMs, default 500) and returns it. */
  async wait(taskId, { pollMs = 500, signal } = {}) {
    for (;;) {
      const t = await this.task(taskId);
      if (FINISHED.has(t.status)) return t;
      await sleep(pollMs, signal);
    }
  }

  /** Asks to cancel the task and returns it as it stands. */
  async cancel(taskId) {
    return (await this.#call("DELETE", `/api/v1/converge/${encodeURIComponent(taskId)}`)).body.task;
  }

  /**
   * Follows the task's events: onEvent({type: "round", round}) per round as it is scored, then
   * onEvent({type: "result", task}) once. Resolves with the finished task.
   */
  async stream(taskId, onEvent = () => {}, { signal } = {}) {
    const res = await this.fetch(`${this.baseUrl}/api/v1/converge/${encodeURIComponent(taskId)}/events`, {
      headers: this.#headers({ accept: "text/event-stream" }), signal,
    });
    if (!res.ok) throw await errorOf(res);
    const decoder = new TextDecoder();
    let buffer = "";
    let result;
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (name === "round") await onEvent({ type: "round", round: JSON.parse(data.join("\n")) });
        if (name === "result") {
          result = JSON.parse(data.join("\n"));
          await onEvent({ type: "result", task: result });
        }
      }
    }
    return result ?? this.task(taskId);
  }

  /** The tenant behind the key: envId, orgId, name, plan, limits, used. */
  async me() { return (await this.#call("GET", "/api/v1/me")).body; }

  /** The tenant's own usage and cost; from and to are YYYY-MM-DD, groupBy e.g. ["model"]. */
  async usage({ from, to, groupBy } = {}) {
    const q = new URLSearchParams();
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    if (groupBy?.length) q.set("groupBy", groupBy.join(","));
    return (await this.#call("GET", `/api/v1/usage/me${q.size ? `?${q}` : ""}`)).body;
  }

  /** The secret webhooks are signed with: {secret, previousSecret?, ...}. */
  async webhookSecret() { return (await this.#call("GET", "/api/v1/webhooks/secret")).body.webhook; }

  /**
   * Whether a webhook delivery was signed by the platform with one of secrets and sent within
   * toleranceSeconds (default 300) of now: Standard Webhooks v1. headers is a Headers object or
   * a plain object of the request's headers; body the raw body as a string or bytes.
   */
  static verifyWebhook(headers, body, secrets, { toleranceSeconds = 300 } = {}) {
    const get = (name) => (typeof headers?.get === "function" ? headers.get(name) : headers?.[name] ?? headers?.[name.toLowerCase()]);
    const id = get("webhook-id"), ts = get("webhook-timestamp"), sigs = get("webhook-signature");
    if (!id || !ts || !sigs || !/^\d+$/.test(ts)) return false;
    if (Math.abs(Date.now() / 1000 - Number(ts)) > toleranceSeconds) return false;
    const payload = Buffer.concat([Buffer.from(`${id}.${ts}.`), Buffer.from(body)]);
    for (const secret of [secrets].flat()) {
      const key = Buffer.from(String(secret).replace(/^whsec_/, ""), "base64");
      if (key.length === 0) continue;
      const want = createHmac("sha256", key).update(payload).digest();
      for (const sig of sigs.split(" ")) {
        const [version, value] = sig.split(",");
        if (version !== "v1" || !value) continue;
        const got = Buffer.from(value, "base64");
        if (got.length === want.length && timingSafeEqual(got, want)) return true;
      }
    }
    return false;
  }

  #key() {
    return this.apiKeyFile ? readFileSync(this.apiKeyFile, "utf8").trim() : this.apiKey;
  }

  #headers(extra = {}) {
    return { authorization: `Bearer ${this.#key()}`, "user-agent": "convergence-js/1", ...extra };
  }

  async #call(method, path, body, { create = false, requestId = randomUUID(), idempotencyKey = randomUUID() } = {}) {
    const headers = this.#headers({ accept: "application/json", "x-request-id": requestId });
    if (body !== undefined) headers["content-type"] = "application/json";
    if (create) headers["idempotency-key"] = idempotencyKey;
    for (let attempt = 0; ; attempt++) {
      const res = await this.fetch(this.baseUrl + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (res.ok) return { status: res.status, body: await res.json() };
      const err = await errorOf(res);
      const retryable = res.status === 429 || res.status === 503;
      const waitMs = err.retryAfter ? err.retryAfter * 1000 : 250 * 2 ** attempt;
      if (!retryable || attempt >= this.retries || waitMs > this.maxWaitMs) throw err;
      await sleep(waitMs);
    }
  }
}

async function errorOf(res) {
  let e = {};
  try { e = (await res.json()).error ?? {}; } catch { /* not the API's JSON error */ }
  const retryAfter = Number(res.headers.get("retry-after")) || 0;
  return new ConvergenceError(res.status, e.code ?? "http_error", e.message ?? res.statusText,
    e.requestId ?? res.headers.get("x-request-id"), retryAfter);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); reject(signal.reason); }, { once: true });
  });
}
