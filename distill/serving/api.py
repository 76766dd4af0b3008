"""An OpenAI-compatible HTTP API over one or more students: the app factory.

`create_app` returns a FastAPI app serving `GET /v1/models`, `POST /v1/chat/completions`,
`POST /v1/completions` and the capture-deletion calls. `distill serve-model` runs it with uvicorn; the
hosted service mounts the same app per deployment, passing its own `authorize` (token check) and
`choose` (which model of a deployment answers, for traffic splits).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.serving.capture import CaptureLog, DeleteRequest, opted_out
from distill.serving.engine import BatchEngine, Delta, SamplingParams, Sequence
from distill.serving.schemas import (ChatRequest, CompletionRequest, GenerationRequest, chat_chunk_choice,
                                     chat_logprobs, completion_logprobs, error_body, usage)
from distill.serving.tools import OutputPlan, StreamReader, ToolRequestError, plan_output, read_output, template_messages


@dataclass
class ServedModel:
    id: str  # the name clients pass as `model`: <bundle name>-<version>
    engine: BatchEngine
    created: int = 0

    @property
    def tokenizer(self):
        return self.engine.tokenizer


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type=type, param=param, code=code)


@dataclass
class ServedModels:
    """What an app serves: its models, which of them answers a request (`choose`), the capture log (None:
    off) and the completion length when a request names none."""

    models: list[ServedModel]
    choose: Callable[[str], ServedModel | None] | None = None
    capture: CaptureLog | None = None
    default_max_tokens: int = 256

    def pick(self, requested: str) -> ServedModel:
        model = self.choose(requested) if self.choose else next((m for m in self.models if m.id == requested), None)
        if model is None:
            raise ApiError(404, f"The model `{requested}` does not exist; GET /v1/models lists what is served",
                           param="model", code="model_not_found")
        return model

    def keeps(self, body: GenerationRequest, request: Request) -> bool:
        """Whether this request's inputs and outputs go to the capture log."""
        return self.capture is not None and self.capture.wants(opted_out(body.metadata, request.headers))


def create_app(models: list[ServedModel], *, authorize: Callable[[str], bool] | None = None,
               capture: CaptureLog | None = None, choose: Callable[[str], ServedModel] | None = None,
               default_max_tokens: int = 256) -> FastAPI:
    """`authorize(token)` says whether a bearer token may call (None: no auth). `choose(requested)` picks
    the model that answers a request naming `requested` (default: the model with that id)."""
    served = ServedModels(models, choose, capture, default_max_tokens)
    app = FastAPI(title="distill student", docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app)
    checked = [Depends(token_check(authorize))]

    @app.get("/v1/models", dependencies=checked)
    async def list_models():
        return {"object": "list", "data": [{"id": m.id, "object": "model", "created": m.created,
                                            "owned_by": "distill"} for m in models]}

    @app.post("/v1/chat/completions", dependencies=checked)
    async def chat_completions(body: ChatRequest, request: Request):
        return await answer_chat(served, body, request)

    @app.post("/v1/completions", dependencies=checked)
    async def completions(body: CompletionRequest, request: Request):
        return await answer_completion(served, body, request)

    add_capture_routes(app, capture, checked)
    app.state.models = models
    return app


def token_check(authorize: Callable[[str], bool] | None) -> Callable[..., None]:
    """The routes' dependency: a bearer token `authorize` accepts (None: every caller may call)."""

    def check_token(authorization: str | None = Header(None)) -> None:
        if authorize is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token or not authorize(token):
            raise ApiError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                           code="invalid_api_key")

    return check_token


def add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error body: ours, a request that fails validation, an unknown route."""

    @app.exception_handler(ApiError)
    async def _api_error(_request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return JSONResponse(error_body(message, param=param, code="invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), code=code), status_code=exc.status_code)


async def answer_chat(served: ServedModels, body: ChatRequest, request: Request):
    """POST /v1/chat/completions: the choices as one response, or streamed as server-sent events; `tools` and
    `response_format` shape what the student may write (distill.serving.tools)."""
    refuse_unsupported(body)
    model = served.pick(body.model)
    plan = output_plan(body, model.tokenizer)
    prompt_ids = chat_prompt_ids(model.tokenizer, body, plan)
    budget = completion_budget(body, len(prompt_ids), model.engine.context_length, served.default_max_tokens, "messages")
    job = Job(model, "chat.completion", [prompt_ids], [body.sampling(budget, i) for i in range(body.n)],
              allowed=plan.allowed)
    keep = served.keeps(body, request)
    inputs = chat_inputs(body)
    if body.stream:
        return sse(stream_chat(job, body, served.capture if keep else None, inputs, plan))
    texts, finishes, logprobs, completion = await job.collect()
    if keep:
        await asyncio.to_thread(served.capture.record, job.id, "chat.completions", model.id, inputs, texts)
    choices = [chat_choice(i, plan, texts[i], finishes[i], chat_logprobs(logprobs[i]) if body.logprobs else None)
               for i in range(body.n)]
    return {"id": job.id, "object": "chat.completion", "created": job.created, "model": model.id,
            "choices": choices, "usage": usage(len(prompt_ids), completion)}


def chat_inputs(body: ChatRequest) -> dict:
    """What a capture keeps of a chat request: the whole conversation, tool calls and the tools offered."""
    inputs = {"messages": [{"role": m.role, "content": m.text(), **({"tool_calls": m.tool_calls} if m.tool_calls else {}),
                            **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})} for m in body.messages]}
    if body.tools:
        inputs["tools"] = body.tools
    return inputs


async def answer_completion(served: ServedModels, body: CompletionRequest, request: Request):
    """POST /v1/completions: up to 16 choices (prompts x n), as one response or streamed."""
    refuse_unsupported(body)
    model = served.pick(body.model)
    prompts = [completion_prompt_ids(model.tokenizer, p) for p in body.prompts()]
    if len(prompts) * body.n > 16:
        raise ApiError(400, "at most 16 choices per request (prompts x n)", param="n")
    budget = completion_budget(body, max(map(len, prompts)), model.engine.context_length, served.default_max_tokens,
                               "prompt")
    job = Job(model, "text_completion", prompts, [body.sampling(budget, i) for i in range(body.n)])
    keep = served.keeps(body, request)
    inputs = {"prompt": body.prompts()}
    if body.stream:
        return sse(stream_completion(job, body, served.capture if keep else None, inputs))
    texts, finishes, logprobs, completion = await job.collect()
    if keep:
        await asyncio.to_thread(served.capture.record, job.id, "completions", model.id, inputs, texts)
    choices = [{"index": i, "text": texts[i], "finish_reason": finishes[i],
                "logprobs": completion_logprobs(logprobs[i], 0) if body.logprobs is not None else None}
               for i in range(len(texts))]
    return {"id": job.id, "object": "text_completion", "created": job.created, "model": model.id,
            "choices": choices, "usage": usage(sum(map(len, prompts)) * body.n, completion)}


def add_capture_routes(app: FastAPI, capture: CaptureLog | None, dependencies: list) -> None:
    """The calls that delete captured requests (by id, or by a query), refused when capture is off."""

    def log() -> CaptureLog:
        if capture is None:
            raise ApiError(404, "capture is off for this deployment: nothing is stored", code="capture_off")
        return capture

    @app.post("/v1/captures/delete", dependencies=dependencies)
    async def delete_captures(body: DeleteRequest):
        return {"deleted": await asyncio.to_thread(log().delete, body)}

    @app.delete("/v1/captures/{request_id}", dependencies=dependencies)
    async def delete_capture(request_id: str):
        return {"deleted": await asyncio.to_thread(log().delete, DeleteRequest(request_ids=[request_id]))}


def api_key_check(expected: str) -> Callable[[str], bool]:
    """`authorize` for one shared key, compared in constant time."""
    return lambda token: hmac.compare_digest(token.encode(), expected.encode())


def refuse_unsupported(body: GenerationRequest) -> None:
    unsupported = body.unsupported()
    if unsupported is not None:
        raise ApiError(400, unsupported.message, param=unsupported.param, code=unsupported.code)


def completion_budget(body: GenerationRequest, prompt_tokens: int, context: int, default: int, prompt_field: str) -> int:
    """The most tokens each choice may generate. What the request asks for, or a 400 when the context cannot
    hold it (as OpenAI refuses: never clipped silently); the server's default, within the room left, when it
    asks for nothing."""
    if prompt_tokens >= context:
        raise ApiError(400, f"This model's maximum context length is {context} tokens, and the {prompt_field} alone "
                            f"is {prompt_tokens} tokens. Shorten the {prompt_field}.",
                       param=prompt_field, code="context_length_exceeded")
    requested = body.requested_max_tokens()
    if requested is None:
        return min(default, context - prompt_tokens)
    field, wanted = requested
    if prompt_tokens + wanted > context:
        raise ApiError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt_tokens + wanted} tokens ({prompt_tokens} in the {prompt_field}, {wanted} in the "
                            f"completion). Lower `{field}` to at most {context - prompt_tokens}, or shorten the "
                            f"{prompt_field}.", param=field, code="context_length_exceeded")
    return wanted


# --- prompts ---


def chat_prompt_ids(tokenizer, body: ChatRequest, plan: OutputPlan) -> list[int]:
    """The messages in the student's chat format, laid out as in training: the start token, then the text, then
    what the plan forces the answer to begin with."""
    if not tokenizer.chat_template:
        raise ApiError(400, "this model has no chat format; use POST /v1/completions", param="messages")
    text = tokenizer.apply_chat_template(template_messages(body.messages), tools=plan.tools,
                                         add_generation_prompt=True, tokenize=False)
    if tokenizer.bos_token and text.startswith(tokenizer.bos_token):
        text = text[len(tokenizer.bos_token):]
    forced = tokenizer(plan.forced, add_special_tokens=False).input_ids if plan.forced else []
    return laid_out(tokenizer, text) + forced


def output_plan(body: ChatRequest, tokenizer) -> OutputPlan:
    try:
        return plan_output(body, tokenizer)
    except ToolRequestError as exc:
        raise ApiError(400, str(exc), param=exc.param, code=exc.code) from None


def chat_choice(index: int, plan: OutputPlan, text: str, finish: str | None, logprobs: dict | None) -> dict:
    content, calls = read_output(plan, text)
    message = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
        finish = "tool_calls" if finish == "stop" else finish
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def completion_prompt_ids(tokenizer, prompt: str) -> list[int]:
    return laid_out(tokenizer, prompt)


def laid_out(tokenizer, text: str) -> list[int]:
    from distill.train.data import start_token

    return [start_token(tokenizer), *tokenizer(text, add_special_tokens=False).input_ids]


# --- running requests on the engine ---


class Job:
    """The choices of one request (each prompt x each sampling), running as sequences on the engine; deltas
    arrive on one queue."""

    def __init__(self, model: ServedModel, kind: str, prompts: list[list[int]], params: list[SamplingParams],
                 allowed: Callable[[list[int]], list[int] | None] | None = None):
        prefix = {"chat.completion": "chatcmpl", "text_completion": "cmpl"}[kind]
        self.id, self.created, self.model = f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model
        self.queue: asyncio.Queue[tuple[int, Delta]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.sequences = []
        for prompt in prompts:
            for p in params:
                index = len(self.sequences)
                emit = (lambda i: lambda delta: loop.call_soon_threadsafe(self.queue.put_nowait, (i, delta)))(index)
                self.sequences.append(Sequence(prompt, p, emit, allowed=allowed))

    async def deltas(self) -> AsyncIterator[tuple[int, Delta]]:
        for sequence in self.sequences:
            self.model.engine.submit(sequence)
        open_choices = len(self.sequences)
        try:
            while open_choices:
                index, delta = await self.queue.get()
                if delta.finish_reason == "error":
                    raise ApiError(500, "the model failed while generating; see the server log", type="server_error")
                open_choices -= delta.finish_reason is not None
                yield index, delta
        finally:
            for sequence in self.sequences:
                sequence.cancelled = True  # no-op for finished ones; frees the batch slot when a client leaves

    async def collect(self):
        n = len(self.sequences)
        texts, finishes, logprobs, tokens = [""] * n, [None] * n, [[] for _ in range(n)], [0] * n
        async for index, delta in self.deltas():
            texts[index] += delta.text
            logprobs[index].extend(delta.logprobs)
            tokens[index] = delta.completion_tokens
            finishes[index] = delta.finish_reason or finishes[index]
        return texts, finishes, logprobs, sum(tokens)


def sse(events: AsyncIterator[dict]) -> StreamingResponse:
    async def lines():
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def stream_chat(job: Job, body: ChatRequest, capture: CaptureLog | None, inputs: dict,
                      plan: OutputPlan) -> AsyncIterator[dict]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": job.model.id,
            "system_fingerprint": None}
    extra = {"usage": None} if include_usage else {}
    for index in range(len(job.sequences)):
        yield {**head, "choices": [chat_chunk_choice(index, None, role=True)], **extra}
    texts, tokens = [""] * len(job.sequences), [0] * len(job.sequences)
    readers = [StreamReader(plan) for _ in job.sequences]
    async for index, delta in job.deltas():
        texts[index] += delta.text
        tokens[index] = delta.completion_tokens
        if plan.reads_tools:  # replies and tool calls told apart (distill.serving.tools)
            pieces = readers[index].push(delta.text) + (readers[index].finish() if delta.finish_reason else [])
            for piece in pieces:
                yield {**head, "choices": [chat_chunk_choice(index, None, body=piece)], **extra}
        elif delta.text or delta.logprobs:
            yield {**head, "choices": [chat_chunk_choice(index, Delta(delta.text, delta.logprobs),
                                                         logprobs=body.logprobs)], **extra}
        if delta.finish_reason:
            finish = "tool_calls" if readers[index].called and delta.finish_reason == "stop" else delta.finish_reason
            yield {**head, "choices": [chat_chunk_choice(index, Delta("", (), finish))], **extra}
    if include_usage:
        yield {**head, "choices": [], "usage": usage(len(job.sequences[0].prompt_ids), sum(tokens))}
    if capture is not None:
        await asyncio.to_thread(capture.record, job.id, "chat.completions", job.model.id, inputs, texts)


async def stream_completion(job: Job, body: CompletionRequest, capture: CaptureLog | None,
                            inputs: dict) -> AsyncIterator[dict]:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": job.id, "object": "text_completion", "created": job.created, "model": job.model.id}
    extra = {"usage": None} if include_usage else {}
    texts, tokens = [""] * len(job.sequences), [0] * len(job.sequences)
    async for index, delta in job.deltas():
        logprobs = completion_logprobs(delta.logprobs, len(texts[index])) if body.logprobs is not None else None
        texts[index] += delta.text
        tokens[index] = delta.completion_tokens
        yield {**head, "choices": [{"index": index, "text": delta.text, "logprobs": logprobs,
                                    "finish_reason": delta.finish_reason}], **extra}
    if include_usage:
        prompt_tokens = sum(len(s.prompt_ids) for s in job.sequences)
        yield {**head, "choices": [], "usage": usage(prompt_tokens, sum(tokens))}
    if capture is not None:
        await asyncio.to_thread(capture.record, job.id, "completions", job.model.id, inputs, texts)
