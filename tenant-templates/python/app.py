"""The Python tenant app (Flask): what a tenant developer starts from when a spawn names
"language": "python". It calls the Convergence platform with the tenant's own key through the
Python client (convergence.py, from clients/python), which reads the key from the file the
provisioner gives (CONVERGENCE_API_KEY_FILE, with CONVERGENCE_API_URL) at each call, so key
rotations need no restart. The same surface as the Go template:

    POST /api/converge          {"prompt", "type", "agentARole", "agentBRole", "context", "maxRounds",
                                 "async", "model", "webhookUrl", "tokenBudget", "timeoutSeconds"}
    POST /api/design, /api/review, /api/decide   the same, with the type set by the path
    GET  /api/converge/<taskId> the task as it stands
    GET  /health                liveness, for the provisioner and the image's HEALTHCHECK

A finished task is answered 200 with its convergenceScore, stopReason and output beside the
task; a running one 202. The caller's X-Request-ID and Idempotency-Key are passed on. Errors
have the platform's envelope: its 4xx passed through (429 with Retry-After), its 5xx as 502.
"""

import json
import math
import os
import re
import sys

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from convergence import ConvergenceClient, ConvergenceError

FIELDS = {"prompt", "type", "agentARole", "agentBRole", "context", "maxRounds", "async",
          "model", "webhookUrl", "tokenBudget", "timeoutSeconds"}
PRINTABLE = re.compile(r"^[\x20-\x7e]+$")

try:
    platform = ConvergenceClient()
except (ValueError, OSError) as e:
    platform = None
    print(json.dumps({"level": "WARN", "msg": "the platform is not configured", "err": str(e)}), file=sys.stderr)

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = 256 << 10


def error(status, code, message, request_id=None):
    info = {"code": code, "message": message}
    if request_id:
        info["requestId"] = request_id
    return jsonify(success=False, error=info), status


def pass_on():
    """The caller's request id and idempotency key, when valid, for the platform calls."""
    call = {}
    rid, key = request.headers.get("X-Request-ID", ""), request.headers.get("Idempotency-Key", "")
    if 0 < len(rid) <= 128 and PRINTABLE.match(rid):
        call["request_id"] = rid
    if 0 < len(key) <= 255 and PRINTABLE.match(key):
        call["idempotency_key"] = key
    return call


def answer_task(task):
    r = task.get("result")
    finished = task["status"] in ("completed", "failed", "cancelled")
    body = {"success": True, "taskId": task["taskId"], "status": task["status"],
            "convergenceScore": r["convergenceScore"] if r else None, "task": task}
    if r:
        body.update(converged=r["converged"], stopReason=r["stopReason"], output=r["output"])
    resp = jsonify(body)
    resp.status_code = 200 if finished else 202
    if not finished:
        resp.headers["Location"] = f"/api/converge/{task['taskId']}"
    return resp


def platform_error(e):
    if isinstance(e, ConvergenceError) and e.status < 500:
        resp, status = error(e.status, e.code, e.message, e.request_id)
        if e.status == 429:
            resp.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after or 1)))
        return resp, status
    if isinstance(e, ConvergenceError):
        return error(502, "upstream_error", f"the Convergence platform answered {e.status}; retry later, quoting request {e.request_id}")
    print(json.dumps({"level": "WARN", "msg": "platform unreachable", "err": str(e)}), file=sys.stderr)
    return error(502, "upstream_unreachable", "the Convergence platform could not be reached; retry later")


def not_configured():
    return error(503, "not_configured", "this app does not know the platform: set CONVERGENCE_API_URL and "
                 "CONVERGENCE_API_KEY_FILE (the provisioner sets both in every tenant container)")


@app.get("/health")
def health():
    return jsonify(status="ok")


def converge(type_):
    if platform is None:
        return not_configured()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "invalid_request", 'send a JSON object with at least a prompt, e.g. {"prompt": "Design a rate limiter"}')
    problems = []
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        problems.append(f"unknown fields {', '.join(unknown)}; the fields are {', '.join(sorted(FIELDS))}")
    if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
        problems.append('"prompt" is required: say what the two agents should converge on')
    if type_ and body.get("type") and body["type"] != type_:
        problems.append(f'"type" {json.dumps(body["type"])} does not fit this endpoint, which asks for {type_}; '
                        'leave "type" out, or use POST /api/converge')
    if problems:
        return error(400, "invalid_request", "; ".join(problems))
    options = {k: v for k, v in body.items() if k != "prompt"}
    if type_:
        options["type"] = type_
    try:
        return answer_task(platform.converge(body["prompt"], **pass_on(), **options))
    except (ConvergenceError, OSError) as e:
        return platform_error(e)


app.add_url_rule("/api/converge", "converge", lambda: converge(""), methods=["POST"])
for t in ("design", "review", "decide"):
    app.add_url_rule(f"/api/{t}", t, lambda t=t: converge(t), methods=["POST"])


@app.get("/api/converge/<task_id>")
def task(task_id):
    if platform is None:
        return not_configured()
    try:
        return answer_task(platform.task(task_id, **{k: v for k, v in pass_on().items() if k == "request_id"}))
    except (ConvergenceError, OSError) as e:
        return platform_error(e)


@app.errorhandler(HTTPException)
def http_error(e):
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return error(e.code, codes.get(e.code, "invalid_request"), e.description)


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("0.0.0.0", int(os.environ.get("PORT", "8080")), app, threaded=True)
