"""ConvergenceClient: the Python client of Convergence's tenant API.

Standard library only, Python 3.11 or newer::

    from convergence import ConvergenceClient
    client = ConvergenceClient()  # CONVERGENCE_API_URL, CONVERGENCE_API_KEY
    task = client.design("A login flow for a banking app",
                         agentARole="Security Expert", agentBRole="UX Designer")
    print(task["result"]["convergenceScore"], task["result"]["output"])

Every call sends an X-Request-ID; a create sends an Idempotency-Key, kept across its retries,
so a retried create never runs or bills twice. 429 and 503 answers are retried, honouring
Retry-After, a bounded number of times. Failures raise ConvergenceError with the status, code,
message and request id the API answered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ConvergenceClient", "ConvergenceError"]

_FINISHED = {"completed", "failed", "cancelled"}


class ConvergenceError(Exception):
    """The error the API answered."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None, retry_after: float = 0):
        super().__init__(f"convergence: {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.request_id, self.retry_after = request_id, retry_after


class ConvergenceClient:
    """A tenant's client: base_url defaults to CONVERGENCE_API_URL, api_key to CONVERGENCE_API_KEY.

    api_key_file (default CONVERGENCE_API_KEY_FILE, a tenant container's, unless api_key is
    given) names a file holding the key, read at each call so that the platform's key rotations
    need no restart."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 api_key_file: str | None = None, retries: int = 3, max_wait: float = 30.0, timeout: float = 330.0):
        self.base_url = (base_url or os.environ.get("CONVERGENCE_API_URL") or "http://localhost:3000").rstrip("/")
        self.api_key_file = api_key_file or (None if api_key else os.environ.get("CONVERGENCE_API_KEY_FILE"))
        self.api_key = api_key or os.environ.get("CONVERGENCE_API_KEY")
        if self.api_key_file:
            self._key()  # A file that cannot be read fails here, not at the first call.
        elif not self.api_key:
            raise ValueError("convergence: no API key: pass api_key or api_key_file, or set CONVERGENCE_API_KEY(_FILE)")
        self.retries, self.max_wait, self.timeout = retries, max_wait, timeout

    # Tasks.

    def converge(self, prompt: str, *, request_id: str | None = None, idempotency_key: str | None = None,
                 **options: Any) -> dict:
        """Runs a task and returns it finished (waiting past the API's sync wait), or at once with
        async=True. request_id and idempotency_key, when given, are sent instead of new ones (an
        app passes on those of the request it serves)."""
        if not prompt:
            raise ValueError("convergence: a request needs a prompt")
        status, body = self._call("POST", "/api/v1/converge", {"prompt": prompt, **options}, create=True,
                                  request_id=request_id, idempotency_key=idempotency_key)
        if status == 202 and not options.get("async"):
            return self.wait(body["taskId"])
        return body["task"]

    def design(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("design", prompt, context, options)

    def review(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("review", prompt, context, options)

    def decide(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("decide", prompt, context, options)

    def plan(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("plan", prompt, context, options)

    def analyze(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("analyze", prompt, context, options)

    def generate(self, prompt: str, context: str | None = None, **options: Any) -> dict:
        return self._typed("generate", prompt, context, options)

    def _typed(self, type_: str, prompt: str, context: str | None, options: dict) -> dict:
        if context is not None:
            options["context"] = context
        return self.converge(prompt, **{**options, "type": type_})

    def task(self, task_id: str, request_id: str | None = None) -> dict:
        """The task as it stands."""
        return self._call("GET", f"/api/v1/converge/{urllib.parse.quote(task_id, safe='')}", request_id=request_id)[1]["task"]

    def wait(self, task_id: str, poll: float = 0.5) -> dict:
        """Polls the task until it has finished and returns it."""
        while True:
            t = self.task(task_id)
            if t["status"] in _FINISHED:
                return t
            time.sleep(poll)

    def cancel(self, task_id: str) -> dict:
        """Asks to cancel the task and returns it as it stands."""
        return self._call("DELETE", f"/api/v1/converge/{urllib.parse.quote(task_id, safe='')}")[1]["task"]

    def stream(self, task_id: str, on_event: Callable[[dict], None] = lambda e: None) -> dict:
        """Follows the task's events: on_event({"type": "round", "round": ...}) per round, then
        on_event({"type": "result", "task": ...}). Returns the finished task."""
        req = urllib.request.Request(f"{self.base_url}/api/v1/converge/{urllib.parse.quote(task_id, safe='')}/events",
                                     headers=self._headers(accept="text/event-stream"))
        result = None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                name, data = "message", []
                for raw in resp:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line == "":
                        if name == "round":
                            on_event({"type": "round", "round": json.loads("\n".join(data))})
                        elif name == "result":
                            result = json.loads("\n".join(data))
                            on_event({"type": "result", "task": result})
                        name, data = "message", []
        except urllib.error.HTTPError as e:
            raise _error_of(e) from None
        return result if result is not None else self.task(task_id)

    # The tenant.

    def me(self) -> dict:
        """The tenant behind the key: envId, orgId, name, plan, limits, used."""
        return self._call("GET", "/api/v1/me")[1]

    def usage(self, from_: str | None = None, to: str | None = None, group_by: Iterable[str] = ()) -> dict:
        """The tenant's own usage and cost; from_ and to are YYYY-MM-DD, group_by e.g. ["model"]."""
        q = {k: v for k, v in {"from": from_, "to": to, "groupBy": ",".join(group_by)}.items() if v}
        return self._call("GET", "/api/v1/usage/me" + (f"?{urllib.parse.urlencode(q)}" if q else ""))[1]

    def webhook_secret(self) -> dict:
        """The secret webhooks are signed with: {"secret", "previousSecret"?, ...}."""
        return self._call("GET", "/api/v1/webhooks/secret")[1]["webhook"]

    @staticmethod
    def verify_webhook(headers: Mapping[str, str], body: bytes, secrets: str | Iterable[str],
                       tolerance: float = 300) -> bool:
        """Whether a webhook delivery was signed by the platform with one of secrets and sent
        within tolerance seconds of now: Standard Webhooks v1. body is the raw body."""
        h = {k.lower(): v for k, v in headers.items()}
        msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
        if not (msg_id and ts and sigs and ts.isdigit()) or abs(time.time() - int(ts)) > tolerance:
            return False
        payload = f"{msg_id}.{ts}.".encode() + body
        for secret in [secrets] if isinstance(secrets, str) else secrets:
            try:
                key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            except ValueError:
                continue
            if not key:
                continue
            want = hmac.new(key, payload, hashlib.sha256).digest()
            for sig in sigs.split(" "):
                version, _, value = sig.partition(",")
                if version != "v1":
                    continue
                try:
                    got = base64.b64decode(value, validate=True)
                except ValueError:
                    continue
                if hmac.compare_digest(got, want):
                    return True
        return False

    # Plumbing.

    def _key(self) -> str:
        if self.api_key_file:
            with open(self.api_key_file, encoding="utf-8") as f:
                return f.read().strip()
        return self.api_key

    def _headers(self, **extra: str) -> dict:
        return {"Authorization": f"Bearer {self._key()}", "User-Agent": "convergence-python/1",
                **{k.replace("_", "-"): v for k, v in extra.items()}}

    def _call(self, method: str, path: str, body: Any = None, create: bool = False,
              request_id: str | None = None, idempotency_key: str | None = None) -> tuple[int, dict]:
        headers = self._headers(accept="application/json", x_request_id=request_id or str(uuid.uuid4()))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if create:
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        attempt = 0
        while True:
            req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.status, json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as e:
                err = _error_of(e)
                wait = err.retry_after or 0.25 * 2 ** attempt
                if e.code not in (429, 503) or attempt >= self.retries or wait > self.max_wait:
                    raise err from None
                time.sleep(wait)
                attempt += 1


def _error_of(e: urllib.error.HTTPError) -> ConvergenceError:
    try:
        info = json.loads(e.read() or b"{}").get("error") or {}
    except ValueError:
        info = {}
    try:
        retry_after = float(e.headers.get("Retry-After") or 0)
    except ValueError:
        retry_after = 0
    return ConvergenceError(e.code, info.get("code", "http_error"), info.get("message", e.reason),
                            info.get("requestId") or e.headers.get("X-Request-ID"), retry_after)
