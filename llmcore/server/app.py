"""ASGI 应用（Starlette）：OpenAI 兼容的 /v1 接口、健康检查与聊天页面。

    GET  /health                 {"status": "ok", "models": {名字: {排队数, 统计}}}
    GET  /v1/models              模型列表（OpenAI 格式）
    GET  /v1/models/{id}
    POST /v1/chat/completions    stream=false → 一个 JSON；stream=true → server-sent events，
                                 每块 'data: {chat.completion.chunk}'，最后 'data: [DONE]'
    GET  /                       聊天页面（static/ 下的 HTML/JS/CSS，不依赖任何 CDN）

每个请求的错误都变成 4xx/5xx 的 JSON（OpenAI 错误格式），服务器本身不会因为一个请求而退出。
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .engine import Engine, GenParams, Job, ModelWorker
from .protocol import APIError, ChatRequest, chunk, completion, new_id, parse_chat_request, parse_json, sse, usage

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 4 * 1024 * 1024  # 请求体上限（字节）


class SSEResponse(StreamingResponse):
    """流式响应：无论怎样结束（正常、客户端断开、服务器关闭）都调用 on_close，让生成线程停下。

    与 Starlette 自带的一样，一边发送一边监听 http.disconnect；断开时取消发送任务。
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # 客户端已断开
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()
        finally:
            self.on_close()


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


class ChatServer:
    """持有各模型的工人，处理请求。engines：模型名 → Engine。"""

    def __init__(self, engines: Mapping[str, Engine], default_max_tokens: int = 256, max_queue: int = 64) -> None:
        if not engines:
            raise ValueError("至少要有一个模型")
        self.workers = {name: ModelWorker(name, eng, max_queue) for name, eng in engines.items()}
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())

    # ------------------------------------------------------------------ 路由
    async def health(self, request: Request) -> Response:
        models = {n: {"queued": w.queued, **w.stats} for n, w in self.workers.items()}
        return JSONResponse({"status": "ok", "models": models})

    def _model_card(self, name: str) -> dict[str, Any]:
        eng = self.workers[name].engine
        return {"id": name, "object": "model", "created": self.created, "owned_by": "llm-from-scratch-zh",
                "context_length": eng.context_length}

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card(n) for n in self.workers]})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in self.workers:
            return error_response(self._unknown_model(name))
        return JSONResponse(self._model_card(name))

    def _unknown_model(self, name: str) -> APIError:
        return APIError(404, f"模型 {name!r} 不存在；可用的模型：{', '.join(self.workers)}", param="model",
                        code="model_not_found")

    async def chat_completions(self, request: Request) -> Response:
        try:
            raw = await self._read_body(request)
            req = parse_chat_request(parse_json(raw))
            worker = self.workers.get(req.model)
            if worker is None:
                raise self._unknown_model(req.model)
            params = self._gen_params(req, worker.engine)
            if worker.busy():
                raise APIError(429, f"模型 {req.model} 的队列已满（{worker.max_queue} 个请求），请稍后重试",
                               code="queue_full", type_="server_busy")
        except APIError as e:
            return error_response(e)
        if req.stream:
            return self._stream(req, worker, params)
        return await self._complete(request, req, worker, params)

    # ------------------------------------------------------------------ 细节
    @staticmethod
    async def _read_body(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            raise APIError(413, f"请求体太大（{size} 字节，上限 {MAX_BODY}）", code="request_too_large")
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > MAX_BODY:
                raise APIError(413, f"请求体太大（上限 {MAX_BODY} 字节）", code="request_too_large")
        return body

    def _gen_params(self, req: ChatRequest, engine: Engine) -> GenParams:
        try:
            ids = engine.encode_chat(req.messages)
        except ValueError as e:
            raise APIError(400, f"无法编码消息：{e}", param="messages", code="invalid_value") from None
        if not ids:
            raise APIError(400, "消息编码后为空", param="messages", code="invalid_value")
        if len(ids) > engine.context_length:
            raise APIError(400, f"提示词有 {len(ids)} 个词元，超过了模型的上下文长度 {engine.context_length}；"
                                "请缩短消息或清空对话", param="messages", code="context_length_exceeded")
        seed = req.seed if req.seed is not None else secrets.randbits(63)
        return GenParams(ids=ids, max_tokens=req.max_tokens or self.default_max_tokens, temperature=req.temperature,
                         top_k=req.top_k, top_p=req.top_p, seed=seed, stop=tuple(engine.stop) + req.stop)

    @staticmethod
    def _job(worker: ModelWorker, params: GenParams) -> tuple[Job, asyncio.Queue[tuple[str, Any]]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, payload: Any) -> None:  # 在生成线程里调用
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
            except RuntimeError:  # 事件循环已关闭（服务器正在退出）
                pass

        job = Job(params, emit)
        worker.submit(job)
        return job, queue

    async def _complete(self, request: Request, req: ChatRequest, worker: ModelWorker, params: GenParams) -> Response:
        job, queue = self._job(worker, params)
        parts: list[str] = []

        async def watch_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            job.cancel.set()

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            while True:
                kind, payload = await queue.get()
                if kind == "delta":
                    parts.append(payload)
                elif kind == "error":
                    return error_response(APIError(500, payload, code="generation_failed", type_="server_error"))
                else:
                    info = payload
                    break
        finally:
            job.cancel.set()
            watcher.cancel()
        if info["finish_reason"] == "cancelled":
            return error_response(APIError(503, "请求被取消（客户端断开或服务器正在关闭）", code="cancelled",
                                           type_="server_error"))
        return JSONResponse(completion(new_id(), req.model, "".join(parts), info["finish_reason"], len(params.ids),
                                       info["completion_tokens"]))

    def _stream(self, req: ChatRequest, worker: ModelWorker, params: GenParams) -> Response:
        job, queue = self._job(worker, params)
        cid, created = new_id(), int(time.time())

        async def events() -> AsyncIterator[bytes]:
            yield sse(chunk(cid, req.model, created, {"role": "assistant", "content": ""}))
            pending: tuple[str, Any] | None = None
            while True:
                kind, payload = pending or await queue.get()
                pending = None
                if kind == "delta":
                    # 生成比发送快时，把已经到达的几段文字并成一块发出（少一些 JSON 与系统调用）
                    while pending is None and not queue.empty():
                        nxt = queue.get_nowait()
                        if nxt[0] == "delta":
                            payload += nxt[1]
                        else:
                            pending = nxt
                    yield sse(chunk(cid, req.model, created, {"content": payload}))
                elif kind == "error":
                    yield sse(APIError(500, payload, code="generation_failed", type_="server_error").body())
                    return
                else:
                    break
            reason = payload["finish_reason"]
            if reason == "cancelled":  # 服务器正在关闭
                yield sse(APIError(503, "服务器正在关闭，生成被中止", code="cancelled", type_="server_error").body())
                return
            yield sse(chunk(cid, req.model, created, {}, reason))
            if req.include_usage:
                yield sse(chunk(cid, req.model, created, {}, usage_=usage(len(params.ids),
                                                                           payload["completion_tokens"]),
                                with_choice=False))
            yield sse("[DONE]")

        return SSEResponse(events(), on_close=job.cancel.set)

    def shutdown(self) -> None:
        for w in self.workers.values():
            w.shutdown.set()


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


def create_app(engines: Mapping[str, Engine], default_max_tokens: int = 256, max_queue: int = 64) -> Starlette:
    """建立 ASGI 应用。engines：模型名 → Engine（一个服务器可以同时提供几个模型）。"""
    server = ChatServer(engines, default_max_tokens, max_queue)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        msg = {404: f"没有这个地址：{request.url.path}", 405: f"{request.url.path} 不接受 {request.method} 方法"}
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(APIError(exc.status_code, msg.get(exc.status_code, str(exc.detail)), code=code))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(APIError(500, f"服务器内部错误：{type(exc).__name__}: {exc}", type_="server_error"))

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.shutdown()

    routes = [
        Route("/", _index),
        Route("/health", server.health),
        Route("/v1/models", server.list_models),
        Route("/v1/models/{model:path}", server.get_model),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                    lifespan=_as_cm(lifespan))
    app.state.server = server
    return app


def _as_cm(fn: Callable[[Starlette], AsyncIterator[None]]) -> Any:
    import contextlib

    return contextlib.asynccontextmanager(fn)


__all__ = ["ChatServer", "SSEResponse", "create_app"]
