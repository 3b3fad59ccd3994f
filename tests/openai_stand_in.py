"""A loopback stand-in for OpenAI's fine-tuning and Batch services, for tests (CI has no network and no paid key).

It speaks the wire format the `openai` SDK uses for /v1/files (upload, content), /v1/fine_tuning/jobs (create,
retrieve, list by metadata, events, checkpoints) and /v1/batches (create, retrieve, list), and checks uploads
the way the real service documents them. Fine-tuning files: one JSON object per line with only `messages`,
roles system/user/assistant, at least one assistant turn. Batch files: unique `custom_id`s, POST to
/v1/chat/completions, a body with `model` and `messages`. A batch really runs: each request goes to
`chat_upstream` and the answers come back as an output file. Fine-tuning does not train anything: a job walks validating_files -> queued -> running -> succeeded over a few polls and names its
models ft:<base>:warmbench-test::<job>. Chat completions for any model are passed on to `chat_upstream` (a real
loopback server of the base model, asked for `upstream_model`), so a pipeline can generate with the
"fine-tuned" names end to end; the names asked for are kept in `chat_models`. With `chat_handler` set (a function of
the request body returning the reply's content, possibly "" or None), chat completions are answered by it instead,
in OpenAI's wire format: a server that answers empty replies, or one that blocks, for fault tests.
Counters (`created`, `uploads`, `chat_models`) let tests check that nothing was paid for twice. A job's
hyperparameters come back resolved, as the real service reports them once a job ran: batch_size "auto" (or none)
becomes DEFAULT_BATCH_SIZE. Its checkpoints list comes newest first, as the real one does; `order_checkpoints` (a
function of that list returning a list) reorders it or leaves some out, for tests of code that must not rely on it.
"""
from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import math
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

STATUSES = ("validating_files", "queued", "running", "succeeded")
DEFAULT_BATCH_SIZE = 4  # what "auto" resolves to here (the real service picks one from the data)


class OpenAIStandIn:
    def __init__(self, chat_upstream: str | None = None, upstream_model: str | None = None, polls_per_status: int = 1,
                 fail_with: str | None = None, reject_response_format: bool = False):
        self.chat_upstream, self.upstream_model = chat_upstream, upstream_model
        self.polls_per_status, self.fail_with = polls_per_status, fail_with
        # an endpoint without structured outputs that says so: HTTP 400 for any request with `response_format`
        self.reject_response_format, self.rejected = reject_response_format, 0
        self.files, self.jobs, self.chat_models = {}, {}, []
        self.chat_handler = None  # request body -> reply content, instead of chat_upstream
        self.order_checkpoints = None  # the checkpoint list, newest first -> the list to return
        self.chat_requests = 0  # chat completions answered by chat_handler
        self.batches, self.contents = {}, {}
        self.created = self.uploads = self.batches_created = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the service ---------------------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, purpose: str) -> tuple[int, dict]:
        if purpose == "batch":
            return self._upload_batch_input(name, data)
        if purpose != "fine-tune":
            return 400, _error(f"purpose must be fine-tune or batch, got {purpose!r}")
        examples = 0
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return 400, _error(f"line {number}: invalid JSON")
            messages = record.get("messages")
            if set(record) != {"messages"} or not isinstance(messages, list):
                return 400, _error(f"line {number}: expected exactly the key 'messages', got {sorted(record)}")
            if any(m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str)
                   for m in messages) or not any(m["role"] == "assistant" for m in messages):
                return 400, _error(f"line {number}: bad roles or contents, or no assistant message")
            examples += 1
        with self._lock:
            self.uploads += 1
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                   "filename": name, "purpose": purpose, "status": "processed", "examples": examples}
        return 200, self.files[file_id]

    def _store(self, name: str, data: bytes, purpose: str, **extra) -> dict:
        with self._lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                   "filename": name, "purpose": purpose, "status": "processed", **extra}
            self.contents[file_id] = data
        return self.files[file_id]

    def _upload_batch_input(self, name: str, data: bytes) -> tuple[int, dict]:
        seen = set()
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            request = json.loads(line)
            if request.get("custom_id") in seen or request.get("method") != "POST" \
                    or request.get("url") != "/v1/chat/completions" or not {"model", "messages"} <= set(request.get("body", {})):
                return 400, _error(f"line {number}: not a unique custom_id POSTing a chat completion")
            seen.add(request["custom_id"])
        self.uploads += 1
        return 200, self._store(name, data, "batch")

    def create_batch(self, body: dict) -> tuple[int, dict]:
        if body.get("input_file_id") not in self.files or body.get("endpoint") != "/v1/chat/completions":
            return 400, _error("input_file_id must name an uploaded batch file; endpoint /v1/chat/completions")
        with self._lock:
            self.batches_created += 1
            batch_id = f"batch_{next(self._ids)}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window", "24h"), "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                "metadata": body.get("metadata") or {}, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "_polls": 0, "_thread": None}
        return 200, self.public_batch(batch_id)

    def advance_batch(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        batch["_polls"] += 1
        if batch["status"] == "validating" and batch["_polls"] >= self.polls_per_status:
            batch["status"], batch["_polls"] = "in_progress", 0
            batch["_thread"] = threading.Thread(target=self._run_batch, args=(batch_id,), daemon=True)
            batch["_thread"].start()
        elif batch["status"] == "in_progress" and not batch["_thread"].is_alive() and batch["_polls"] >= self.polls_per_status:
            batch["status"] = "completed"

    def _run_batch(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        lines = [json.loads(line) for line in self.contents[batch["input_file_id"]].decode().splitlines()]
        batch["request_counts"]["total"] = len(lines)
        out = []
        for request in lines:
            body = {**request["body"], "model": self.upstream_model or request["body"]["model"]}
            upstream = urllib.request.Request(f"{self.chat_upstream}/chat/completions", data=json.dumps(body).encode(),
                                              headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(upstream, timeout=300) as reply:
                answer = json.loads(reply.read())
            answer["model"] = request["body"]["model"]  # the name asked for, as OpenAI reports it
            out.append({"id": f"batch_req_{next(self._ids)}", "custom_id": request["custom_id"],
                        "response": {"status_code": 200, "request_id": "req", "body": answer}, "error": None})
            batch["request_counts"]["completed"] += 1
        output = self._store(f"{batch_id}_output.jsonl", "".join(json.dumps(o) + "\n" for o in out).encode(),
                             "batch_output")
        batch["output_file_id"] = output["id"]

    def public_batch(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    def create_job(self, body: dict) -> tuple[int, dict]:
        if body.get("training_file") not in self.files:
            return 400, _error(f"training_file {body.get('training_file')!r} does not exist")
        hyper = body.get("method", {}).get("supervised", {}).get("hyperparameters", {})
        if not isinstance(hyper.get("n_epochs"), int) or hyper["n_epochs"] < 1:
            return 400, _error("method.supervised.hyperparameters.n_epochs must be a positive integer")
        if hyper.get("batch_size") in (None, "auto"):  # resolved, as the service reports it
            hyper["batch_size"] = DEFAULT_BATCH_SIZE
        with self._lock:
            self.created += 1
            job_id = f"ftjob-{next(self._ids)}"
            self.jobs[job_id] = {
                "id": job_id, "object": "fine_tuning.job", "model": body["model"], "created_at": int(time.time()),
                "training_file": body["training_file"], "validation_file": None, "seed": body.get("seed", 0),
                "metadata": body.get("metadata") or {}, "method": body.get("method"), "hyperparameters": hyper,
                "organization_id": "org-loopback", "result_files": [], "status": STATUSES[0], "error": None,
                "fine_tuned_model": None, "finished_at": None, "trained_tokens": None, "_polls": 0,
                "_events": [("job created", 0)],
            }
        return 200, self.public(job_id)

    def advance(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["status"] in ("succeeded", "failed"):
            return
        job["_polls"] += 1
        step = min(job["_polls"] // self.polls_per_status, len(STATUSES) - 1)
        if self.fail_with and STATUSES[step] == "running":
            job.update(status="failed", error={"code": "invalid_training_file", "message": self.fail_with,
                                               "param": "training_file"})
            job["_events"].append((f"job failed: {self.fail_with}", len(job["_events"])))
            return
        if STATUSES[step] != job["status"]:
            job["status"] = STATUSES[step]
            job["_events"].append((f"status {job['status']}", len(job["_events"])))
        if job["status"] == "succeeded" and job["fine_tuned_model"] is None:
            examples = self.files[job["training_file"]]["examples"]
            job.update(fine_tuned_model=f"ft:{job['model']}:warmbench-test::{job_id}", finished_at=int(time.time()),
                       trained_tokens=100 * examples * job["hyperparameters"]["n_epochs"])

    def checkpoints(self, job_id: str) -> list[dict]:
        job = self.jobs[job_id]
        if job["status"] != "succeeded":
            return []
        n_epochs = job["hyperparameters"]["n_epochs"]
        per_epoch = math.ceil(self.files[job["training_file"]]["examples"] / job["hyperparameters"]["batch_size"])
        kept = [{"id": f"ftckpt-{job_id}-{epoch}", "object": "fine_tuning.job.checkpoint", "created_at": 0,
                 "fine_tuning_job_id": job_id, "step_number": epoch * per_epoch,
                 "fine_tuned_model_checkpoint": f"ft:{job['model']}:warmbench-test::{job_id}:ckpt-step-{epoch * per_epoch}",
                 "metrics": {"step": epoch * per_epoch, "train_loss": 1.0 / epoch}}
                for epoch in range(n_epochs, max(n_epochs - 3, 0), -1)]  # newest first; the last three epochs
        return list(self.order_checkpoints(kept)) if self.order_checkpoints else kept

    def public(self, job_id: str) -> dict:
        return {k: v for k, v in self.jobs[job_id].items() if not k.startswith("_")}

    def events(self, job_id: str) -> list[dict]:
        return [{"id": f"ftevent-{job_id}-{i}", "object": "fine_tuning.job.event", "created_at": 0, "level": "info",
                 "message": message, "type": "message"} for message, i in reversed(self.jobs[job_id]["_events"])]


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


def _page(items: list[dict]) -> dict:
    return {"object": "list", "data": items, "has_more": False}


def _handler(service: "OpenAIStandIn"):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: tests read the counters instead
            pass

        def _send(self, status: int, body: dict | bytes) -> None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_GET(self):
            url = urlparse(self.path)
            query = dict(parse_qsl(url.query))
            if url.path == "/v1/batches":
                return self._send(200, _page([service.public_batch(b) for b in reversed(list(service.batches))]))
            if match := re.fullmatch(r"/v1/batches/([\w-]+)", url.path):
                if match.group(1) not in service.batches:
                    return self._send(404, _error(f"no batch {match.group(1)}"))
                with service._lock:
                    service.advance_batch(match.group(1))
                return self._send(200, service.public_batch(match.group(1)))
            if match := re.fullmatch(r"/v1/files/([\w-]+)/content", url.path):
                if match.group(1) not in service.contents:
                    return self._send(404, _error(f"no file {match.group(1)}"))
                return self._send(200, service.contents[match.group(1)])
            if url.path == "/v1/fine_tuning/jobs":
                wanted = {m.group(1): v for k, v in query.items() if (m := re.fullmatch(r"metadata\[(.+)\]", k))}
                jobs = [service.public(j) for j in reversed(list(service.jobs))
                        if all(service.jobs[j]["metadata"].get(k) == v for k, v in wanted.items())]
                return self._send(200, _page(jobs[: int(query.get("limit", 20))]))
            match = re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)(/events|/checkpoints)?", url.path)
            if not match or match.group(1) not in service.jobs:
                return self._send(404, _error(f"no such resource: {url.path}"))
            job_id, part = match.groups()
            if part == "/events":
                return self._send(200, _page(service.events(job_id)))
            if part == "/checkpoints":
                return self._send(200, _page(service.checkpoints(job_id)))
            with service._lock:
                service.advance(job_id)
            return self._send(200, service.public(job_id))

        def do_POST(self):
            path, body = urlparse(self.path).path, self._body()
            if path == "/v1/files":
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                parts = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
                if "file" not in parts:
                    return self._send(400, _error("no file part"))
                purpose = parts["purpose"].get_content() if "purpose" in parts else ""
                return self._send(*service.upload(parts["file"].get_filename(), parts["file"].get_payload(decode=True),
                                                  purpose.strip()))
            if path == "/v1/fine_tuning/jobs":
                return self._send(*service.create_job(json.loads(body)))
            if path == "/v1/batches":
                return self._send(*service.create_batch(json.loads(body)))
            if path == "/v1/chat/completions" and service.chat_handler is not None:
                request = json.loads(body)
                content = service.chat_handler(request)
                with service._lock:
                    service.chat_requests += 1
                return self._send(200, {
                    "id": f"chatcmpl-{next(service._ids)}", "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model"), "system_fingerprint": "fp_stand_in",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": len((content or "").split()),
                              "total_tokens": 7 + len((content or "").split())}})
            if path == "/v1/chat/completions" and service.chat_upstream:
                request = json.loads(body)
                if service.reject_response_format and "response_format" in request:
                    service.rejected += 1
                    return self._send(400, _error("response_format is not supported by this endpoint"))
                service.chat_models.append(request.get("model"))
                request["model"] = service.upstream_model or request["model"]
                upstream = urllib.request.Request(f"{service.chat_upstream}/chat/completions",
                                                  data=json.dumps(request).encode(),
                                                  headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(upstream, timeout=300) as reply:
                    return self._send(reply.status, reply.read())
            return self._send(404, _error(f"no such endpoint: {path}"))

    return Handler
