"""A loopback stand-in for the paid teacher APIs, speaking the OpenAI and Anthropic wire formats.

The real `openai` and `anthropic` SDK clients talk to it over HTTP, so tests exercise exactly the code
that talks to the real services. It answers chat completions, messages, files and both batch APIs; it
can be slow (`latency`), enforce a requests-per-minute limit (429 + Retry-After), and play a script of
faults (429, 5xx, hangs, malformed bodies, truncations, refusals, expired batches). It counts what it
served, per endpoint and per unique prompt, so tests can prove nothing was paid for twice.

In-process (a background thread):

    with TeacherServer(latency=0.05, rpm=600) as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test")
        server.add_fault("rate_limit", times=2, retry_after=0.1)
        ...
        server.stats()["answers"]

As a subprocess (for kill -9 tests and benchmarks): `python tests/teacher_server.py --port 0 --latency 0.3
--rpm 3000` prints one JSON line `{"port": ..., "url": ..., "openai_base_url": ...,
"anthropic_base_url": ...}` once it listens; `GET /_stats`, `POST /_reset`, `POST /_faults` (a JSON list
of `add_fault` keyword dicts) and `POST /_expire_next_batch` (`{"keep": n}`) control it.
`TeacherServerProcess` wraps that with the same methods as `TeacherServer`.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Literal

# The wire formats live beside this file. It is imported as `teacher_server` (tests/ on sys.path), as
# `tests.teacher_server` (benchmarks) and run as a script, so make its own folder importable in all three.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from teacher_wire import (  # noqa: E402
    ANTHROPIC_CUSTOM_ID,
    REFUSAL_TEXT,
    Answer,
    Api,
    Batch,
    ItemError,
    RequestError,
    TeacherCall,
    anthropic_batch_json,
    anthropic_message_json,
    anthropic_result_lines,
    count_tokens,
    default_answer_text,  # re-exported, as are TeacherCall and prompt_key
    error_json,
    jsonl,
    multipart_fields,
    openai_batch_items,
    openai_batch_json,
    openai_completion_json,
    openai_result_lines,
    parse_anthropic_call,
    parse_openai_call,
    prompt_key,  # re-exported: tests compute the keys that stats()['by_prompt'] uses
)

FaultKind = Literal["rate_limit", "server_error", "hang", "malformed", "truncate", "refusal"]
FAULT_KINDS = ("rate_limit", "server_error", "hang", "malformed", "truncate", "refusal")
# Faults that describe what the model wrote (or a per-item error); they also apply to batch items.
# The others are about the HTTP exchange and only make sense for live requests.
BATCH_ITEM_FAULTS = ("server_error", "truncate", "refusal")


@dataclass
class Fault:
    kind: FaultKind
    match: str | None = None  # substring of the request's messages; None matches every request
    times: int | None = 1  # how many requests it hits; None = every matching request, forever
    retry_after: float = 1.0  # seconds, for rate_limit
    status: int = 500  # for server_error: 500, 502, 503, 529, ... (a 4xx tests non-retryable handling)



class RequestBucket:
    """Server-side requests-per-minute limit as a token bucket holding `burst_seconds` worth of requests.

    Real APIs enforce a per-minute limit over short windows too, so a client cannot burst a whole
    minute's quota in one second.
    """

    def __init__(self, rpm: float, burst_seconds: float):
        self.rate = rpm / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float | None:
        """None if the request may go ahead, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class TeacherServer:
    """The fake teacher: OpenAI and Anthropic endpoints on 127.0.0.1, scriptable, counting.

    Args:
        port: 0 picks a free port.
        latency: seconds every live answer takes (many requests wait concurrently).
        rpm: server-side requests-per-minute limit on live completions (None = unlimited); over it the
            server answers 429 with the Retry-After a real API would give.
        burst_seconds: how many seconds' worth of requests the limiter lets through at once.
        responder: TeacherCall -> answer text; default: deterministic words from the prompt's hash, or a
            small JSON instance when the request asks for a JSON schema.
        answer_words: length of the default answer, in words (= tokens for this server).
        hang_seconds: how long a `hang` fault holds the request before dropping the connection.
        batch_seconds: how long a batch takes from creation to its end; its items finish evenly over it.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        rpm: float | None = None,
        burst_seconds: float = 1.0,
        responder: Callable[[TeacherCall], str] | None = None,
        answer_words: int = 60,
        hang_seconds: float = 30.0,
        batch_seconds: float = 0.0,
    ):
        self.latency = latency
        self.responder = responder or (lambda call: default_answer_text(call, answer_words))
        self.hang_seconds = hang_seconds
        self.batch_seconds = batch_seconds
        self.calls: list[TeacherCall] = []  # every live request and batch item received, in order
        self._bucket = RequestBucket(rpm, burst_seconds) if rpm else None
        self._lock = threading.Lock()
        self._batch_lock = threading.Lock()
        self._stopping = threading.Event()
        self._faults: list[Fault] = []
        self._expire_keep: list[int] = []
        self._files: dict[str, tuple[str, str, bytes]] = {}  # id -> (filename, purpose, content)
        self._batches: dict[str, Batch] = {}
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.teacher = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # -- lifecycle and addresses

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What to pass as `base_url` to the OpenAI SDK (it appends /chat/completions etc.)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to pass as `base_url` to the Anthropic SDK (it appends /v1/messages etc.)."""
        return self.url

    def start(self) -> TeacherServer:
        # A short poll interval so stop() returns at once instead of after the default half second.
        serve = lambda: self._httpd.serve_forever(poll_interval=0.02)  # noqa: E731
        self._thread = threading.Thread(target=serve, name="teacher-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (subprocess mode)."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging and sleeping requests
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting

    def add_fault(
        self,
        kind: FaultKind,
        *,
        match: str | None = None,
        times: int | None = 1,
        retry_after: float = 1.0,
        status: int = 500,
    ) -> None:
        """Queue a fault. Faults are tried in the order added; the first whose `match` fits is used.

        kinds: rate_limit (429 + Retry-After `retry_after`), server_error (`status`), hang (hold the
        request `hang_seconds`, then drop it unanswered), malformed (200 with a cut-off JSON body),
        truncate (half the answer, finish length / max_tokens), refusal (OpenAI: message.refusal with
        content null and finish "stop"; Anthropic: stop_reason "refusal"). server_error, truncate and
        refusal also hit batch items (server_error makes an errored item).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._faults.append(Fault(kind, match, times, retry_after, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._expire_keep.clear()

    def expire_next_batch(self, keep: int) -> None:
        """The next batch created (either API) expires after finishing only its first `keep` items."""
        with self._lock:
            self._expire_keep.append(keep)

    # -- counters

    def reset_stats(self) -> None:
        with self._lock:
            self._by_endpoint: Counter[str] = Counter()
            self._by_prompt: Counter[str] = Counter()
            self._faults_served: Counter[str] = Counter()
            self._live_answers = 0
            self._batch_answers = 0
            self._rate_limited = 0
            self._abandoned = 0
            self._in_flight = 0
            self._max_in_flight = 0
            self._first_request_at: float | None = None
            self._last_request_at: float | None = None

    def stats(self) -> dict[str, Any]:
        """Everything counted so far, as plain JSON-able data (the same as `GET /_stats`).

        requests: API requests received (every endpoint); by_endpoint: e.g. {"POST /v1/chat/completions": 3};
        completion_requests: live chat/messages requests; answers: answers delivered (live + batch items,
        truncated and refused ones included, as a real API bills them); by_prompt: prompt_key -> answers;
        unique_prompts; duplicate_answers: answers beyond the first per prompt; faults: kind -> times served;
        rate_limited: 429s from the rpm limit; abandoned: live requests whose client hung up (timeout,
        kill -9) before the answer was ready, so not answered; max_in_flight: peak concurrent live
        completions; first_request_at / last_request_at: unix times.
        """
        with self._lock:
            answers = self._live_answers + self._batch_answers
            return {
                "requests": sum(self._by_endpoint.values()),
                "by_endpoint": dict(self._by_endpoint),
                "completion_requests": self._by_endpoint["POST /v1/chat/completions"]
                + self._by_endpoint["POST /v1/messages"],
                "answers": answers,
                "live_answers": self._live_answers,
                "batch_answers": self._batch_answers,
                "unique_prompts": len(self._by_prompt),
                "duplicate_answers": answers - len(self._by_prompt),
                "by_prompt": dict(self._by_prompt),
                "faults": dict(self._faults_served),
                "rate_limited": self._rate_limited,
                "abandoned": self._abandoned,
                "max_in_flight": self._max_in_flight,
                "first_request_at": self._first_request_at,
                "last_request_at": self._last_request_at,
            }

    # -- what the handler calls

    def count_request(self, endpoint: str) -> None:
        with self._lock:
            self._by_endpoint[endpoint] += 1
            now = time.time()
            self._first_request_at = self._first_request_at or now
            self._last_request_at = now

    def enter_live(self, call: TeacherCall) -> float | None:
        """Register a live request; returns a Retry-After if the rpm limit refuses it."""
        with self._lock:
            self.calls.append(call)
            wait = self._bucket.take() if self._bucket else None
            if wait is not None:
                self._rate_limited += 1
                return wait
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return None

    def count_abandoned(self) -> None:
        with self._lock:
            self._abandoned += 1

    def leave_live(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def take_fault(self, call: TeacherCall, kinds: tuple[str, ...] = FAULT_KINDS) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and (fault.match is None or fault.match in call.text):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    self._faults_served[fault.kind] += 1
                    return fault
            return None

    def answer(self, call: TeacherCall, fault: Fault | None, *, batch: bool = False) -> Answer:
        """Write (and count, as billed) the answer to one call."""
        input_tokens = sum(count_tokens(content) for _, content in call.messages)
        if fault is not None and fault.kind == "refusal":
            text, finish = REFUSAL_TEXT, "refusal"
        else:
            text, finish = self.responder(call), "stop"
            words = text.split(" ")
            if fault is not None and fault.kind == "truncate":
                text, finish = " ".join(words[: max(1, len(words) // 2)]), "length"
            elif call.max_tokens is not None and count_tokens(text) > call.max_tokens:
                text, finish = " ".join(text.split()[: call.max_tokens]), "length"
        with self._lock:
            self._by_prompt[call.prompt_key] += 1
            if batch:
                self._batch_answers += 1
            else:
                self._live_answers += 1
        return Answer(text, finish, input_tokens, count_tokens(text))

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server stops."""
        self._stopping.wait(seconds)

    def store_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self._lock:
            self._files[file_id] = (filename, purpose, content)
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def file_content(self, file_id: str) -> bytes | None:
        with self._lock:
            entry = self._files.get(file_id)
        return None if entry is None else entry[2]

    def create_batch(self, api: Api, items: list[TeacherCall], **extra: Any) -> Batch:
        prefix = "batch_" if api == "openai" else "msgbatch_"
        with self._lock:
            keep = self._expire_keep.pop(0) if self._expire_keep else len(items)
            batch = Batch(f"{prefix}{uuid.uuid4().hex[:24]}", api, items, self.batch_seconds, min(keep, len(items)), **extra)
            self._batches[batch.id] = batch
            self.calls.extend(items)
        return batch

    def advance_batch(self, batch_id: str, *, cancel: bool = False) -> Batch | None:
        """Bring a batch up to date: answer the items due by now, write the OpenAI files once it ended."""
        # One poller at a time, so two concurrent polls never answer (and bill) the same item twice;
        # a separate lock because answering takes `_lock` for the counters.
        with self._batch_lock:
            return self._advance_batch(batch_id, cancel)

    def _advance_batch(self, batch_id: str, cancel: bool) -> Batch | None:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.validation_errors:
            return batch
        now = time.monotonic()
        if cancel and not batch.ended(now):
            batch.cancelled_at = now
        while len(batch.results) < batch.due(now):
            item = batch.items[len(batch.results)]
            fault = self.take_fault(item, BATCH_ITEM_FAULTS)
            if fault is not None and fault.kind == "server_error":
                batch.results.append(ItemError(fault.status, "The server had an error processing this request."))
            else:
                batch.results.append(self.answer(item, fault, batch=True))
        if batch.api == "openai" and batch.ended(now) and batch.output_file_id is None:
            output, errors = openai_result_lines(batch)
            batch.output_file_id = self.store_file(f"{batch.id}_output.jsonl", "batch_output", jsonl(output))["id"]
            if errors:
                batch.error_file_id = self.store_file(f"{batch.id}_error.jsonl", "batch_output", jsonl(errors))["id"]
        return batch


# ----------------------------------------------------------------------------- HTTP


ROUTES: list[tuple[str, str, str]] = [  # (method, path template, handler method)
    ("POST", "/v1/chat/completions", "_openai_completion"),
    ("POST", "/v1/files", "_openai_upload_file"),
    ("GET", "/v1/files/{id}/content", "_openai_file_content"),
    ("POST", "/v1/batches", "_openai_create_batch"),
    ("GET", "/v1/batches/{id}", "_openai_get_batch"),
    ("POST", "/v1/batches/{id}/cancel", "_openai_cancel_batch"),
    ("POST", "/v1/messages", "_anthropic_message"),
    ("POST", "/v1/messages/batches", "_anthropic_create_batch"),
    ("GET", "/v1/messages/batches/{id}", "_anthropic_get_batch"),
    ("GET", "/v1/messages/batches/{id}/results", "_anthropic_batch_results"),
    ("POST", "/v1/messages/batches/{id}/cancel", "_anthropic_cancel_batch"),
]
ROUTE_PATTERNS = [re.compile("^" + template.replace("{id}", "(?P<id>[^/]+)") + "$") for _, template, _ in ROUTES]


class _HTTPServer(ThreadingHTTPServer):
    # The stdlib's listen backlog of 5 overflows when a client opens dozens of connections at once,
    # and the kernel then resets some of them; real APIs accept thousands.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)  # a client hanging up is normal; the rest is a bug


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

    @property
    def teacher(self) -> TeacherServer:
        return self.server.teacher  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # thousands of requests per test: keep stderr quiet

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any, *, headers: dict[str, str] | None = None, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self._read_body() or b"{}")
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError(400, "request body must be a JSON object")
        return body

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/_"):
            return self._control(method, path)
        api: Api = "anthropic" if path.startswith("/v1/messages") else "openai"
        for (route_method, template, handler), pattern in zip(ROUTES, ROUTE_PATTERNS):
            found = pattern.match(path)
            if route_method == method and found:
                break
        else:
            self.teacher.count_request(f"{method} (unknown)")
            self._read_body()
            return self._send(404, error_json(api, 404, f"no route for {method} {path}"))
        self.teacher.count_request(f"{method} {template}")
        try:
            self._check_key(api)
            getattr(self, handler)(**found.groupdict())
        except RequestError as exc:
            self._send(exc.status, error_json(api, exc.status, exc.message))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to answer

    def _check_key(self, api: Api) -> None:
        # Anthropic's SDK has sent the key as x-api-key or as a bearer token, depending on its version.
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not bearer and not (api == "anthropic" and self.headers.get("x-api-key")):
            self._read_body()
            raise RequestError(401, "no API key sent")

    def _control(self, method: str, path: str) -> None:
        body = self._json_body() if method == "POST" else {}
        if path == "/_stats":
            return self._send(200, self.teacher.stats())
        if path == "/_reset":
            self.teacher.reset_stats()
        elif path == "/_faults":
            for fault in body.get("faults", []):
                self.teacher.add_fault(**fault)
        elif path == "/_expire_next_batch":
            self.teacher.expire_next_batch(int(body["keep"]))
        else:
            return self._send(404, {"error": f"no control route {path}"})
        self._send(200, {"ok": True})

    # -- live completions

    def _openai_completion(self) -> None:
        self._live(parse_openai_call(self._json_body()))

    def _anthropic_message(self) -> None:
        self._live(parse_anthropic_call(self._json_body()))

    def _live(self, call: TeacherCall) -> None:
        teacher = self.teacher
        wait = teacher.enter_live(call)
        if wait is not None:
            return self._rate_limited(call.api, wait, "Rate limit reached for requests per minute.")
        try:
            fault = teacher.take_fault(call)
            if fault is not None and fault.kind == "rate_limit":
                return self._rate_limited(call.api, fault.retry_after, "Rate limit reached (scripted).")
            if fault is not None and fault.kind == "server_error":
                # Like the real APIs, a 401 echoes the key it was sent.
                sent = self.headers.get("Authorization", "").removeprefix("Bearer ").strip() or self.headers.get("x-api-key", "")
                message = f"Incorrect API key provided: {sent}." if fault.status == 401 else "The server had an error."
                return self._send(fault.status, error_json(call.api, fault.status, message))
            if fault is not None and fault.kind == "hang":
                teacher.pause(teacher.hang_seconds)
                self.close_connection = True  # drop it unanswered
                return None
            teacher.pause(teacher.latency)
            if self._client_gone():
                # It timed out or died (kill -9) while the answer was being "written": it will ask
                # again, so it is not counted as answered; the counts then mean answers delivered.
                teacher.count_abandoned()
                self.close_connection = True
                return None
            if fault is not None and fault.kind == "malformed":
                return self._send(200, None, raw=b'{"id": "cut-off", "choices": [{"index": 0, "message": {"con')
            answer = teacher.answer(call, fault)
            wire = openai_completion_json if call.api == "openai" else anthropic_message_json
            self._send(200, wire(call, answer))
        finally:
            teacher.leave_live()

    def _client_gone(self) -> bool:
        """True when the client has closed its end (the socket reads as end-of-file)."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _rate_limited(self, api: Api, retry_after: float, message: str) -> None:
        # Fractional seconds are not standard HTTP, but both SDKs accept them, and at 50 requests per
        # second a whole second would be far too coarse; retry-after-ms says the same thing precisely.
        headers = {"retry-after": f"{retry_after:.3f}", "retry-after-ms": str(round(retry_after * 1000))}
        self._send(429, error_json(api, 429, message), headers=headers)

    # -- OpenAI files and batches

    def _openai_upload_file(self) -> None:
        parts = multipart_fields(self.headers.get("Content-Type", ""), self._read_body())
        if "file" not in parts or "purpose" not in parts:
            raise RequestError(400, "multipart fields 'file' and 'purpose' are required")
        filename, content = parts["file"]
        self._send(200, self.teacher.store_file(filename or "upload.jsonl", parts["purpose"][1].decode(), content))

    def _openai_file_content(self, id: str) -> None:  # noqa: A002 - route parameter
        content = self.teacher.file_content(id)
        if content is None:
            raise RequestError(404, f"No such File object: {id}")
        self._send(200, None, raw=content, content_type="application/octet-stream")

    def _openai_create_batch(self) -> None:
        body = self._json_body()
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            raise RequestError(400, "endpoint must be '/v1/chat/completions' and completion_window '24h'")
        content = self.teacher.file_content(body.get("input_file_id", ""))
        if content is None:
            raise RequestError(404, f"No such File object: {body.get('input_file_id')}")
        items, problems = openai_batch_items(content)
        batch = self.teacher.create_batch("openai", items, input_file_id=body["input_file_id"], validation_errors=problems)
        self._send(200, openai_batch_json(batch, time.monotonic()))

    def _openai_get_batch(self, id: str) -> None:  # noqa: A002
        self._send(200, openai_batch_json(self._batch(id), time.monotonic()))

    def _openai_cancel_batch(self, id: str) -> None:  # noqa: A002
        self._read_body()
        already_ended = self._batch(id).ended(time.monotonic())
        batch = self.teacher.advance_batch(id, cancel=True)
        assert batch is not None
        self._send(200, openai_batch_json(batch, time.monotonic(), cancelling=not already_ended))

    def _batch(self, batch_id: str) -> Batch:
        batch = self.teacher.advance_batch(batch_id)
        if batch is None:
            raise RequestError(404, f"No batch found with id '{batch_id}'")
        return batch

    # -- Anthropic message batches

    def _anthropic_create_batch(self) -> None:
        requests = self._json_body().get("requests")
        if not isinstance(requests, list) or not requests:
            raise RequestError(400, "requests: a non-empty list is required")
        ids = [request.get("custom_id", "") for request in requests]
        bad = [i for i in ids if not ANTHROPIC_CUSTOM_ID.match(str(i))]
        if bad or len(set(ids)) != len(ids):
            raise RequestError(400, f"custom_id values must be unique and match ^[a-zA-Z0-9_-]{{1,64}}$: {bad[:3]}")
        items = [parse_anthropic_call(request["params"], request["custom_id"]) for request in requests]
        batch = self.teacher.create_batch("anthropic", items)
        self._send(200, anthropic_batch_json(batch, time.monotonic(), self._results_url(batch.id)))

    def _anthropic_get_batch(self, id: str) -> None:  # noqa: A002
        batch = self._batch(id)
        self._send(200, anthropic_batch_json(batch, time.monotonic(), self._results_url(id)))

    def _anthropic_batch_results(self, id: str) -> None:  # noqa: A002
        batch = self._batch(id)
        if not batch.ended(time.monotonic()):
            raise RequestError(400, f"Message Batch {id} has not finished processing")
        self._send(200, None, raw=jsonl(anthropic_result_lines(batch)), content_type="application/x-jsonl")

    def _anthropic_cancel_batch(self, id: str) -> None:  # noqa: A002
        self._read_body()
        already_ended = self._batch(id).ended(time.monotonic())
        batch = self.teacher.advance_batch(id, cancel=True)
        assert batch is not None
        payload = anthropic_batch_json(batch, time.monotonic(), self._results_url(id), canceling=not already_ended)
        self._send(200, payload)

    def _results_url(self, batch_id: str) -> str:
        return f"{self.teacher.url}/v1/messages/batches/{batch_id}/results"


# ----------------------------------------------------------------------------- subprocess mode


class TeacherServerProcess:
    """`tests/teacher_server.py` run as a child process, with TeacherServer's control methods.

    The options are TeacherServer's keyword arguments (not `responder`): `TeacherServerProcess(latency=0.3,
    rpm=3000)`. Kill it with `.process.kill()` or leave the `with` block.
    """

    def __init__(self, **options: Any):
        self.options = options
        self.process: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}

    def start(self) -> TeacherServerProcess:
        args = [sys.executable, str(Path(__file__).resolve())]
        for key, value in self.options.items():
            if value is not None:
                text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
                args += [f"--{key.replace('_', '-')}", text]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise RuntimeError(f"teacher server did not start: {args}")
        self.ready = json.loads(line)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> TeacherServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    port = property(lambda self: self.ready["port"])
    url = property(lambda self: self.ready["url"])
    openai_base_url = property(lambda self: self.ready["openai_base_url"])
    anthropic_base_url = property(lambda self: self.ready["anthropic_base_url"])

    def _control(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=data), timeout=10) as reply:
            return json.loads(reply.read())

    def stats(self) -> dict[str, Any]:
        return self._control("/_stats")

    def reset_stats(self) -> None:
        self._control("/_reset", {})

    def add_fault(self, kind: FaultKind, **options: Any) -> None:
        self._control("/_faults", {"faults": [{"kind": kind, **options}]})

    def expire_next_batch(self, keep: int) -> None:
        self._control("/_expire_next_batch", {"keep": keep})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback OpenAI/Anthropic-compatible fake teacher.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per live answer")
    parser.add_argument("--rpm", type=float, default=None, help="requests-per-minute limit (429 above it)")
    parser.add_argument("--burst-seconds", type=float, default=1.0)
    parser.add_argument("--answer-words", type=int, default=60)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--batch-seconds", type=float, default=0.0)
    parser.add_argument("--faults", default="[]", help="JSON list of add_fault keyword dicts")
    args = parser.parse_args(argv)
    server = TeacherServer(
        port=args.port,
        latency=args.latency,
        rpm=args.rpm,
        burst_seconds=args.burst_seconds,
        answer_words=args.answer_words,
        hang_seconds=args.hang_seconds,
        batch_seconds=args.batch_seconds,
    )
    for fault in json.loads(args.faults):
        server.add_fault(**fault)
    ready = {"port": server.port, "url": server.url, "openai_base_url": server.openai_base_url,
             "anthropic_base_url": server.anthropic_base_url}
    print(json.dumps(ready), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
