// Runs the client against a real Convergence API: CONVERGENCE_API_URL and CONVERGENCE_API_KEY
// (a tenant's key) must be set; internal/e2e's TestClients runs it that way with `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvergenceClient, ConvergenceError } from "./convergence.mjs";

const client = new ConvergenceClient();

test("design answers the finished task with its score", async () => {
  const task = await client.design("Design a rate limiter [sim:converge]", { agentARole: "Architect", agentBRole: "SRE" });
  assert.equal(task.status, "completed");
  assert.equal(task.type, "design");
  assert.equal(task.agentARole, "Architect");
  assert.ok(task.result.convergenceScore >= 0 && task.result.convergenceScore <= 100);
  assert.ok(task.result.usage.totalTokens > 0);
});

test("an async converge is waited for, and streamed round by round", async () => {
  const queued = await client.converge("Plan a migration [sim:converge]", { type: "plan", async: true });
  assert.ok(["queued", "running"].includes(queued.status));
  const rounds = [];
  const streamed = await client.stream(queued.taskId, (e) => { if (e.type === "round") rounds.push(e.round); });
  assert.equal(streamed.status, "completed");
  assert.equal(rounds.length, streamed.result.rounds);
  const waited = await client.wait(queued.taskId);
  assert.equal(waited.result.convergenceScore, streamed.result.convergenceScore);
});

test("decide takes its context as the second argument, as the original design's client did", async () => {
  const task = await client.decide("Postgres or MySQL? [sim:converge]", "We run on Debian and need JSON columns.");
  assert.equal(task.type, "decide");
  assert.equal(task.status, "completed");
});

test("cancel stops a running task", async () => {
  const t = await client.converge({ prompt: "Pick a queue [sim:never]", maxRounds: 10, async: true });
  await client.cancel(t.taskId);
  assert.equal((await client.wait(t.taskId)).status, "cancelled");
});

test("the API's errors are thrown with their code", async () => {
  await assert.rejects(client.task("tsk_does_not_exist"), (e) => e instanceof ConvergenceError && e.status === 404 && e.code === "not_found" && typeof e.requestId === "string");
  const stranger = new ConvergenceClient({ apiKey: "sk_tenant_not_a_key" });
  await assert.rejects(stranger.me(), (e) => e.status === 401);
});

test("me, usage and a webhook the client verifies", async () => {
  const me = await client.me();
  assert.ok(me.envId > 0 && me.plan);
  const usage = await client.usage({ groupBy: ["model"] });
  assert.deepEqual(usage.groupBy, ["model"]);

  const { secret } = await client.webhookSecret();
  const delivered = new Promise((resolve) => {
    const server = createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => { res.writeHead(204).end(); server.close(); resolve({ headers: req.headers, body: Buffer.concat(chunks) }); });
    }).listen(0, "127.0.0.1", () => {
      client.review("Review this plan [sim:converge]", { webhookUrl: `http://127.0.0.1:${server.address().port}/hook` });
    });
  });
  const { headers, body } = await delivered;
  assert.equal(ConvergenceClient.verifyWebhook(headers, body, secret), true);
  assert.equal(ConvergenceClient.verifyWebhook(headers, Buffer.concat([body, Buffer.from(" ")]), secret), false);
  assert.equal(ConvergenceClient.verifyWebhook(headers, body, "whsec_c2VjcmV0"), false);
});

test("a key file is read at each call, so a rotated key needs no restart", async () => {
  const file = join(mkdtempSync(join(tmpdir(), "convergence-")), "api-key");
  writeFileSync(file, `${process.env.CONVERGENCE_API_KEY}\n`);
  const fromFile = new ConvergenceClient({ apiKeyFile: file });
  assert.ok((await fromFile.me()).envId > 0);
  writeFileSync(file, "sk_tenant_replaced_by_someone\n");
  await assert.rejects(fromFile.me(), (e) => e.status === 401);
  writeFileSync(file, process.env.CONVERGENCE_API_KEY);
  assert.ok((await fromFile.me()).envId > 0);
});
