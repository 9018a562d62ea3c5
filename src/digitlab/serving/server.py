"""The REST server and the draw-a-digit page: FastAPI on uvicorn.

    POST /invocations[?model=URI]  MLflow's scoring format: {"inputs": pixels} (or "instances",
                                   "dataframe_split", or a bare list); pixels (N, 28, 28) or
                                   (N, 784), 0..255 -> {"predictions": {"probabilities": (N, C),
                                   "digit": (N,)}}
    POST /draw[?model=URI]         {"png": canvas data URL} -> the drawing made MNIST-like and
                                   its {"probabilities", "digit", "image"}
    GET  /                         the page (static files); /models the models it can pick
    GET  /health                   "OK" while the server runs; /ready 200 once the default model
                                   is loaded, else 503
    GET  /metrics                  Prometheus: requests by route and status, latency histogram
    GET  /openapi.json, /docs      the API's description

Not ``mlflow models serve``: the page, the choice of model per request and a 4xx with one line
for every bad request are one small app here, where MLflow's scoring app would need a second
process and answers some bad inputs with a 500.

As a service (docs/security.md and experiments/SERVING.md have the reasons and the figures):

- uvicorn's event loop holds every connection, a socket each and no thread: a client trickling
  its request holds nothing another request needs. Parsing and inference run in a pool of
  ``workers`` threads (``anyio.to_thread``), so neither blocks the loop; a slow model load holds
  one of them and only its own requests (:class:`ModelCache`'s per-model locks).
- A connection whose request line and headers have not all arrived ``head_seconds`` after it
  connected, or that sends nothing for ``timeout`` seconds before they have, is closed without
  an answer (:class:`Connection`); a body that pauses ``timeout`` seconds, or takes longer than
  ``request_seconds``, is a 408. Every answer closes its connection (one request each, as
  before): a head deadline then covers every request.
- Bodies: ``application/json`` only (415: a browser sends a cross-origin JSON POST only after a
  preflight, which gets a 405), at most ``MAX_BODY`` bytes (413, on Content-Length before
  reading), no more JSON values than pixels of ``MAX_ROWS`` images need (400, counted on the
  bytes before they are parsed: :func:`check_json_budget`), nested at most as deep as Python's
  recursion allows (400). Bodies being read or answered hold at most ``body_bytes`` in all;
  beyond it a body waits for room before it is read (uvicorn stops reading its socket).
- Host check against DNS rebinding (:class:`Guard`, ``host_allowed``): a server bound to a
  loopback address answers only requests addressed to 127.0.0.1, localhost, ::1 or
  ``allowed_hosts`` (403).
- Every error the app answers is JSON ``{"error_code", "message"}`` on one line. uvicorn answers
  two cases before the app sees them, in its own plain text: a request that is not HTTP/1.1
  (400 ``Invalid HTTP request received.``, a head over ``HEAD_BYTES`` included) and a connection
  beyond ``CONNECTIONS`` (503 ``Service Unavailable``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from digitlab.errors import DigitlabError
from digitlab.serving.mnistify import decode_png, mnistify
from digitlab.serving.model import MAX_ROWS, SIDE, as_pixels
from digitlab.serving.models import ModelBusy, ModelCache, UnknownModel, offered

log = logging.getLogger(__name__)
# 10 000 images (MAX_ROWS) of 784 values up to 255 are 18 MB as compact JSON and 39 MB with
# json.dumps' default ", " separators; more is a client's mistake.
MAX_BODY = 64 * 1024 * 1024
# The JSON that pixels of MAX_ROWS images need, as (characters, at most, what they count):
# json.loads makes a Python object of every value (an empty list costs 56 bytes for its 2, a
# float 24 for "1e5"), so 64 MiB of "[]," would cost over 2 GB. Commas: one before all but the
# first item of each list, (N, 784) pixels and an index of N rows. Brackets: an image and its 28
# rows each. Quotes: the keys, and dataframe_split's 784 column names. Counted inside strings
# too, an over-count no pixel request reaches; a body within them parses into a few hundred MB
# at most (8 bytes a value, 24 more for a float).
JSON_BUDGET = (
    ((b",",), MAX_ROWS * (SIDE * SIDE + 1) + 4096, "JSON values (commas)"),
    ((b"[", b"{"), MAX_ROWS * (SIDE + 1) + 64, "JSON lists and objects"),
    ((b'"',), 2 * (SIDE * SIDE + 256), "JSON strings (quotes)"),
)
# Seconds a connection may send nothing while its head or body arrives.
TIMEOUT = 5.0
# Seconds for the request line and headers to arrive, in all, from the connect: clients send
# them at once, so one trickling them (a byte every few seconds) is dropped, not waited for.
HEAD_SECONDS = 5.0
# The most of a head uvicorn (h11) holds before it refuses the request: a waiting head costs at
# most this much.
HEAD_BYTES = 65536 + 1
# Seconds for a body to arrive: 64 MiB needs about 1 MB/s.
REQUEST_SECONDS = 60.0
# Threads parsing bodies and running models: each may hold a body at MAX_BODY parsed (a few
# hundred MB), so not more.
WORKERS = 8
# Bytes of bodies being read or answered, in all: as many full bodies as there are workers.
BODY_BYTES = WORKERS * MAX_BODY
# Connections and requests at once (uvicorn's ``limit_concurrency``), beyond which uvicorn
# answers 503: each costs a socket and at most HEAD_BYTES of head.
CONNECTIONS = 1024
# The listen backlog: a burst of connections waits here instead of having its connects dropped.
# Linux caps it at net.core.somaxconn (4096).
BACKLOG = 512
# The names under which a loopback server is reached: any other Host is a page that rebound
# its own name to 127.0.0.1 (DNS rebinding), and gets a 403.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ALLOWED_METHODS = "GET, HEAD, POST"
# The routes /metrics counts by name; any other path counts as "other" (no label per URL).
ROUTES = (
    "/",
    "/index.html",
    "/invocations",
    "/draw",
    "/models",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
)


class RequestError(Exception):
    """An HTTP error status with its one-line reason."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


def mlflow_inputs(body: Any) -> Any:
    """The pixels of an MLflow scoring request (``inputs``, ``instances``, ``dataframe_split``)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("inputs", "instances"):
            if key in body:
                return body[key]
        if isinstance(body.get("dataframe_split"), dict) and "data" in body["dataframe_split"]:
            return body["dataframe_split"]["data"]
    raise RequestError(
        HTTPStatus.BAD_REQUEST, 'no pixels found: send {"inputs": [[...784 numbers...]]}'
    )


def host_name(header: str) -> str:
    """The name in a Host header, lower case, without its port: ``[::1]:5001`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0] if header.count(":") == 1 else header


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def host_allowed(header: str | None, bound: str, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a request addressed to ``header`` (its Host) may be answered by a server bound to
    ``bound``.

    Bound to a loopback address: only the loopback names, the bound address and ``allowed``.
    Bound to another address (0.0.0.0 included) without ``allowed``: any name, since the server
    is open to its network anyway and its names there are not known here; with ``allowed``, only
    those, the bound address and the loopback names. ``"*"`` in ``allowed`` allows any. A request
    without Host passes: browsers, the only clients a rebinding attack can use, always send one.
    """
    if header is None or "*" in allowed:
        return True
    if not allowed and not is_loopback(bound):
        return True
    name = host_name(header)
    return name in LOOPBACK_NAMES or name == bound or name in {a.lower() for a in allowed}


def check_json_budget(raw: bytes) -> None:
    """Refuse (400) a body holding more JSON values, lists or strings than pixels of
    ``MAX_ROWS`` images need (``JSON_BUDGET``), before ``json.loads`` builds them: memory then
    follows the pixels a request can carry, not the tokens it is made of. ``bytes.count`` in C,
    once per character: well under a second for ``MAX_BODY``. Counting bytes over-counts in any
    encoding JSON allows (UTF-8, -16, -32 all spell ``[`` with its ASCII byte)."""
    for characters, limit, what in JSON_BUDGET:
        if (count := sum(raw.count(c) for c in characters)) > limit:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the body holds {count} {what}, more than pixels of {MAX_ROWS} images need "
                f"({limit}): send (N, 28, 28) or (N, 784) numbers, 1 to {MAX_ROWS} images "
                "per request",
            )


def _parse_json(raw: bytes) -> Any:
    check_json_budget(raw)
    try:
        return json.loads(raw)
    except RecursionError:  # json's parser recurses per level: 100 000 "[" would end the thread
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            "the JSON nests too deep: pixels need 3 levels of lists at most",
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(
            HTTPStatus.BAD_REQUEST,
            f"the body is not JSON ({str(e).splitlines()[0][:80]}): send JSON",
        ) from None


def error(status: HTTPStatus, message: str, headers: dict | None = None) -> JSONResponse:
    """The one-line JSON answer of every error."""
    return JSONResponse(
        {"error_code": status.name, "message": message}, status.value, headers=headers
    )


def head_end(data: bytes) -> int | None:
    """Where the blank line that ends a request's headers ends in ``data`` (None: not yet)."""
    ends = [i + len(mark) for mark in (b"\n\r\n", b"\n\n") if (i := data.find(mark)) >= 0]
    return min(ends) if ends else None


class Connection(H11Protocol):
    """uvicorn's HTTP/1.1 connection, closed without an answer when its request line and headers
    are not all there ``head_seconds`` after the connect, or ``idle`` seconds pass without data
    before they are (uvicorn itself waits on a new connection for as long as it stays open).
    Only :class:`asyncio.Protocol`'s methods are extended; the rest is uvicorn's."""

    head_seconds = HEAD_SECONDS
    idle = TIMEOUT

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_transport = transport
        self.head_tail = b""  # the last bytes of the head so far: where its end may start
        self.head_due = time.monotonic() + self.head_seconds
        self.head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self.head_timer is not None:
            if head_end(self.head_tail + data) is not None:
                self.head_timer.cancel()
                self.head_timer = None
            else:
                self.head_tail = (self.head_tail + data)[-3:]
                self._arm_head_timer()
        super().data_received(data)

    # uvicorn types its override None; asyncio.Protocol's may return True to keep the transport.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that closes its sending side once its request is out (as ``nc -N`` does)
        still gets its answer: the connection stays open for it (uvicorn would close it). One
        that closes it before its head is complete is closed."""
        return self.head_timer is None or None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        due = min(self.head_due, time.monotonic() + self.idle)
        self.head_timer = asyncio.get_running_loop().call_at(
            asyncio.get_running_loop().time() + max(0.0, due - time.monotonic()), self._head_late
        )

    def _head_late(self) -> None:
        self.head_timer = None
        self.head_transport.close()


class BodyRoom:
    """Bytes of bodies held at once, at most ``total``: :meth:`take` waits until a body fits
    (one body is always let in, whatever its size, so none waits forever)."""

    def __init__(self, total: int) -> None:
        self.total, self.held = total, 0
        self.changed = asyncio.Condition()

    async def take(self, size: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.held == 0 or self.held + size <= self.total)
            self.held += size

    async def give(self, size: int) -> None:
        async with self.changed:
            self.held -= size
            self.changed.notify_all()


class Guard:
    """ASGI middleware in front of every route: the Host check (403), methods other than
    ``ALLOWED_METHODS`` (405 with ``Allow``), ``Connection: close`` on every answer, and the
    Prometheus counts.

    Not Starlette's TrustedHostMiddleware: its answer is a plain-text 400, it refuses a request
    without Host, and the names it allows cannot depend on the address the server is bound to.
    """

    def __init__(self, app, settings: dict) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status_seen = [500]

        async def send_closing(message) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"connection", b"close")],
                }
            await send(message)

        try:
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_closing)
            else:
                await self.app(scope, receive, send_closing)
        finally:
            metrics = self.settings["metrics"]
            metrics["requests"].labels(scope["method"], route, str(status_seen[0])).inc()
            metrics["seconds"].labels(route).observe(time.perf_counter() - started)

    def refusal(self, scope) -> Response | None:
        settings = self.settings
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        # (a request without Host passes: see host_allowed)
        if host is not None and not host_allowed(
            host, settings["bound"], settings["allowed_hosts"]
        ):
            name = host_name(host)
            return error(
                HTTPStatus.FORBIDDEN,
                f"Host {name!r} is not this server's: browse to "
                f"http://127.0.0.1:{settings['port']}/, or allow that name "
                f"(digitlab-serve --allow-host {name})",
            )
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method {scope['method']} is not served: use {ALLOWED_METHODS}",
                {"Allow": ALLOWED_METHODS},
            )
        return None


def build_app(
    client,
    default_model: str | None,
    models: Any,
    *,
    bound: str = "127.0.0.1",
    port: int = 0,
    allowed_hosts: tuple[str, ...] = (),
    workers: int = WORKERS,
    timeout: float = TIMEOUT,
    request_seconds: float = REQUEST_SECONDS,
    body_bytes: int = BODY_BYTES,
) -> FastAPI:
    """The ASGI app of digitlab-serve (the module docstring says what it answers)."""
    registry = CollectorRegistry()  # the app's own: several apps may live in one process
    settings: dict[str, Any] = {
        "bound": bound,
        "port": port,
        "allowed_hosts": tuple(allowed_hosts),
        "metrics": {
            "requests": Counter(
                "digitlab_serve_requests",
                "Requests answered, by method, route and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            "seconds": Histogram(
                "digitlab_serve_request_seconds",
                "Seconds from a request's head to its answer, by route",
                ["route"],
                registry=registry,
            ),
        },
    }
    threads = anyio.CapacityLimiter(workers)
    room: list[BodyRoom] = []  # made on the server's event loop, at its first body
    ready = threading.Event()

    app = FastAPI(
        title="digitlab-serve",
        description="Digits over REST (MLflow's scoring protocol) and a page to draw one on.",
    )

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError) -> JSONResponse:
        return error(e.status, str(e), e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        # Starlette's 404, and its 405 for a path that serves another method: today's 404s
        path = request.url.path
        if e.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED):
            if request.method == "POST":
                message = f"cannot POST to {path}: use /invocations or /draw"
            else:
                message = f"no page {path}: try /, /models or POST /invocations"
            return error(HTTPStatus.NOT_FOUND, message)
        return error(HTTPStatus(e.status_code), str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"msg": "invalid request"}
        return error(HTTPStatus.BAD_REQUEST, f"{first['msg']}: see /docs".replace("\n", " "))

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        # a bug or a failing store: one line for the client, the trace logged
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        return error(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "the server failed on this request (its log says why): retry, or report it",
        )

    async def in_thread(function, *args):
        """``function(*args)`` in the worker threads, its errors as their HTTP answers."""
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=threads)
        except UnknownModel as e:
            raise RequestError(HTTPStatus.NOT_FOUND, str(e)) from None
        except ModelBusy as e:
            raise RequestError(
                HTTPStatus.SERVICE_UNAVAILABLE, str(e), {"Retry-After": "5"}
            ) from None
        except DigitlabError as e:  # bad pixels or a bad drawing: the client's to fix
            raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None

    async def read_body(request: Request) -> tuple[bytes, int]:
        """The body, checked before it is read: JSON (415), a Content-Length (411) of at most
        MAX_BODY (413); then read within ``timeout`` of silence and ``request_seconds`` in all
        (408). Returns it with the room it holds (give it back when answered)."""
        kind = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"the body is {kind}: send JSON with Content-Type: application/json",
            )
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
        size = int(length)
        if size > MAX_BODY:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request is {size} bytes: at most {MAX_BODY} per request",
            )
        if not room:
            room.append(BodyRoom(body_bytes))
        await room[0].take(size)
        try:
            return await read_within(request, size), size
        except BaseException:
            await room[0].give(size)
            raise

    async def read_within(request: Request, size: int) -> bytes:
        body = bytearray()
        deadline = time.monotonic() + request_seconds
        chunks = request.stream()
        while True:
            left = deadline - time.monotonic()
            try:
                with anyio.fail_after(max(0.0, min(timeout, left))):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                raise RequestError(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"the body stopped arriving ({timeout:g} s without data, or over "
                    f"{request_seconds:g} s in all): send it whole at once",
                ) from None
            except ClientDisconnect:  # the client is gone: no one to answer
                raise RequestError(HTTPStatus.BAD_REQUEST, "the client left") from None
            if chunk is None:
                return bytes(body)
            body += chunk
            if len(body) > size:  # h11 holds a body to its Content-Length; this is a backstop
                raise RequestError(HTTPStatus.BAD_REQUEST, "the body is longer than its length")

    def model_for(request: Request):
        return models.get(request.query_params.get("model", default_model))

    def scored(request: Request, raw: bytes) -> dict:
        body = _parse_json(raw)
        model = model_for(request)
        out = model.predict(as_pixels(mlflow_inputs(body)))
        return {"predictions": {k: v.tolist() for k, v in out.items()}}

    def drawn(request: Request, raw: bytes) -> dict:
        body = _parse_json(raw)
        model = model_for(request)
        if not isinstance(body, dict) or "png" not in body:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'send {"png": canvas.toDataURL()}')
        image = mnistify(decode_png(body["png"]))
        out = model.predict(image[None])
        return {
            "probabilities": out["probabilities"][0].tolist(),
            "digit": int(out["digit"][0]),
            "image": image.tolist(),
        }

    async def answer(request: Request, work) -> JSONResponse:
        raw, size = await read_body(request)
        try:
            return JSONResponse(await in_thread(work, request, raw))
        finally:
            del raw
            await room[0].give(size)

    @app.post("/invocations", summary="MLflow's scoring protocol: pixels in, digits out")
    async def invocations(request: Request) -> JSONResponse:
        """Body: ``{"inputs": pixels}``, ``{"instances": pixels}``, ``{"dataframe_split":
        {"data": pixels}}`` or a bare list; pixels (N, 28, 28) or (N, 784), 0..255, 1 to 10 000
        images. ``?model=URI`` picks one of /models."""
        return await answer(request, scored)

    @app.post("/draw", summary="A canvas drawing made MNIST-like, and its digit")
    async def draw(request: Request) -> JSONResponse:
        """Body: ``{"png": canvas.toDataURL()}``."""
        return await answer(request, drawn)

    @app.api_route("/models", methods=["GET", "HEAD"], summary="The models ?model= may pick")
    async def listed() -> JSONResponse:
        allowed = getattr(models, "allowed", None)
        return JSONResponse(
            {
                "default": default_model,
                "models": await in_thread(offered, client, allowed),
            }
        )

    @app.api_route("/health", methods=["GET", "HEAD"], summary="Liveness: OK while it runs")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("OK")

    @app.api_route("/ready", methods=["GET", "HEAD"], summary="Readiness: the default model")
    async def is_ready() -> PlainTextResponse:
        if not ready.is_set():
            try:  # loaded already when served by the CLI
                await in_thread(models.get, default_model)
            except RequestError as e:  # not ready (a 503 keeps a balancer asking), not absent
                headers = {"Retry-After": "5"}
                raise RequestError(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"not ready: {e}", headers
                ) from None
            ready.set()
        return PlainTextResponse("READY")

    @app.api_route("/metrics", methods=["GET", "HEAD"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # Last: the page and nothing else under /, its 404s answered by http_error above.
    app.mount("/", StaticFiles(packages=[("digitlab.serving", "static")], html=True))
    return Guard(app, settings)  # type: ignore[return-value]


class Server:
    """digitlab-serve bound to its address (port 0: a free one), not yet serving: call
    ``serve_forever()``, then ``shutdown()`` (from another thread) and ``server_close()``.
    ``server_address``: (host, port) as bound."""

    def __init__(self, app, address: tuple[str, int], head_seconds: float, timeout: float):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # Bound by hand, not socket.create_server: its OSError rewrites strerror, which the
        # command's one-line error quotes.
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()[:2]
        protocol = type(
            "Connection", (Connection,), {"head_seconds": head_seconds, "idle": timeout}
        )
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_config=None,  # the application's logging, not uvicorn's own setup
            access_log=False,
            timeout_keep_alive=int(max(1, timeout)),
            limit_concurrency=CONNECTIONS,
            h11_max_incomplete_event_size=HEAD_BYTES,
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        self.uvicorn = uvicorn.Server(config)
        self.stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (or, in the main thread, Ctrl-C)."""
        self.stopped.clear()
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        """Stop serving (connections under way get a few seconds) and wait until it has."""
        self.uvicorn.should_exit = True
        self.stopped.wait(30)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    client,
    default_model: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    trusted: tuple[str, ...] = (),
    *,
    models: Any = None,
    allowed_hosts: tuple[str, ...] = (),
    workers: int = WORKERS,
    timeout: float = TIMEOUT,
    request_seconds: float = REQUEST_SECONDS,
    head_seconds: float = HEAD_SECONDS,
    body_bytes: int = BODY_BYTES,
) -> Server:
    """The server, bound (port 0: a free one; an OSError if it cannot) but not yet serving.

    ``models``: what ``?model=`` picks from (``get(uri)`` -> an object with ``predict``); default
    a :class:`ModelCache` of ``client``'s store. ``allowed_hosts``: names besides the loopback
    ones a client may address (``host_allowed``). The rest: see the module's constants.
    """
    models = models if models is not None else ModelCache(client.tracking_uri, trusted)
    server = Server(None, (host, port), min(head_seconds, request_seconds), timeout)
    server.uvicorn.config.app = build_app(
        client,
        default_model,
        models,
        bound=host,
        port=server.server_address[1],
        allowed_hosts=allowed_hosts,
        workers=workers,
        timeout=timeout,
        request_seconds=request_seconds,
        body_bytes=body_bytes,
    )
    return server
