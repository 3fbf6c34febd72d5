// The Node.js tenant app (Express): what a tenant developer starts from when a spawn names
// "language": "node". It calls the Convergence platform with the tenant's own key through the
// JavaScript client (convergence.mjs, from clients/js), which reads the key from the file the
// provisioner gives (CONVERGENCE_API_KEY_FILE, with CONVERGENCE_API_URL) at each call, so key
// rotations need no restart. The same surface as the Go template:
//
//   POST /api/converge          {"prompt", "type", "agentARole", "agentBRole", "context", "maxRounds",
//                                "async", "model", "webhookUrl", "tokenBudget", "timeoutSeconds"}
//   POST /api/design, /api/review, /api/decide   the same, with the type set by the path
//   GET  /api/converge/:taskId  the task as it stands
//   GET  /health                liveness, for the provisioner and the image's HEALTHCHECK
//
// A finished task is answered 200 with its convergenceScore, stopReason and output beside the
// task; a running one 202. The caller's X-Request-ID and Idempotency-Key are passed on. Errors
// have the platform's envelope: its 4xx passed through (429 with Retry-After), its 5xx as 502.
import { createRequire } from "node:module";
import { ConvergenceClient, ConvergenceError } from "./convergence.mjs";

// Debian's node-express is a CommonJS package in the system's module path, which require
// searches and ES imports do not.
const express = createRequire(import.meta.url)("express");

const FIELDS = new Set(["prompt", "type", "agentARole", "agentBRole", "context", "maxRounds", "async",
  "model", "webhookUrl", "tokenBudget", "timeoutSeconds"]);
const printable = (s, max) => typeof s === "string" && s.length > 0 && s.length <= max && /^[\x20-\x7e]+$/.test(s);

let platform = null;
try {
  platform = new ConvergenceClient();
} catch (e) {
  console.error(JSON.stringify({ level: "WARN", msg: "the platform is not configured", err: e.message }));
}

const app = express();
app.disable("x-powered-by");
app.use(express.json({ limit: "256kb", strict: true }));

app.get("/health", (req, res) => res.json({ status: "ok" }));
app.post("/api/converge", converge(""));
for (const type of ["design", "review", "decide"]) app.post(`/api/${type}`, converge(type));
app.get("/api/converge/:taskId", async (req, res) => {
  if (!ready(res)) return;
  try {
    answerTask(res, await platform.task(req.params.taskId, passOn(req)));
  } catch (e) {
    platformError(res, e);
  }
});
app.use((req, res) => error(res, 404, "not_found", `${req.method} ${req.path} is not a route of this app`));
// Bodies express could not read: not JSON, too large.
app.use((err, req, res, _next) => {
  if (err.type === "entity.too.large") return error(res, 413, "too_large", "the request body is over 256 KiB");
  return error(res, 400, "invalid_request", `the body is not one JSON object: ${err.message}`);
});

function converge(type) {
  return async (req, res) => {
    if (!ready(res)) return;
    const body = req.body;
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      return error(res, 400, "invalid_request", 'send a JSON object with at least a prompt, e.g. {"prompt": "Design a rate limiter"}');
    }
    const unknown = Object.keys(body).filter((k) => !FIELDS.has(k));
    const problems = [];
    if (unknown.length) problems.push(`unknown fields ${unknown.join(", ")}; the fields are ${[...FIELDS].join(", ")}`);
    if (typeof body.prompt !== "string" || !body.prompt.trim()) problems.push('"prompt" is required: say what the two agents should converge on');
    if (type && body.type && body.type !== type) problems.push(`"type" ${JSON.stringify(body.type)} does not fit this endpoint, which asks for ${type}; leave "type" out, or use POST /api/converge`);
    if (problems.length) return error(res, 400, "invalid_request", problems.join("; "));
    try {
      answerTask(res, await platform.converge(body.prompt, { ...body, ...(type ? { type } : {}) }, passOn(req)));
    } catch (e) {
      platformError(res, e);
    }
  };
}

// passOn is the caller's request id and idempotency key, when valid, for the platform calls.
function passOn(req) {
  const call = {};
  if (printable(req.get("x-request-id"), 128)) call.requestId = req.get("x-request-id");
  if (printable(req.get("idempotency-key"), 255)) call.idempotencyKey = req.get("idempotency-key");
  return call;
}

function answerTask(res, task) {
  const r = task.result;
  const finished = ["completed", "failed", "cancelled"].includes(task.status);
  if (!finished) res.set("Location", `/api/converge/${task.taskId}`);
  res.status(finished ? 200 : 202).json({
    success: true, taskId: task.taskId, status: task.status,
    convergenceScore: r ? r.convergenceScore : null, converged: r?.converged, stopReason: r?.stopReason, output: r?.output,
    task,
  });
}

function platformError(res, e) {
  if (e instanceof ConvergenceError && e.status < 500) {
    if (e.status === 429) res.set("Retry-After", String(Math.max(1, Math.ceil(e.retryAfter || 1))));
    return error(res, e.status, e.code, e.message.replace(/^convergence: \d+ [a-z_]+: /, ""), e.requestId);
  }
  if (e instanceof ConvergenceError) {
    return error(res, 502, "upstream_error", `the Convergence platform answered ${e.status}; retry later, quoting request ${e.requestId}`);
  }
  console.error(JSON.stringify({ level: "WARN", msg: "platform unreachable", err: String(e) }));
  return error(res, 502, "upstream_unreachable", "the Convergence platform could not be reached; retry later");
}

function ready(res) {
  if (platform) return true;
  error(res, 503, "not_configured", "this app does not know the platform: set CONVERGENCE_API_URL and CONVERGENCE_API_KEY_FILE (the provisioner sets both in every tenant container)");
  return false;
}

function error(res, status, code, message, requestId) {
  res.status(status).json({ success: false, error: { code, message, ...(requestId ? { requestId } : {}) } });
}

const port = Number(process.env.PORT || 8080);
const server = app.listen(port, () => console.log(JSON.stringify({ level: "INFO", msg: "tenant app listening", port })));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
}
