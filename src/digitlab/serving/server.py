"""The REST server and the draw-a-digit page: FastAPI on uvicorn.

``POST /invocations`` takes MLflow's scoring JSON, ``POST /draw`` a canvas PNG; ``/`` is the page,
``/models`` what ``?model=`` may pick, ``/health``, ``/ready``, ``/metrics``, ``/openapi.json`` and
``/docs`` the rest. Not ``mlflow models serve``: the page, the choice of model per request and a
4xx with one line for every bad request are one small app here, where MLflow's scoring app would
need a second process and answers some bad inputs with a 500.

What a client may make it spend, and which uvicorn setting or piece of code here bounds it:
docs/security.md ("digitlab-serve requests"). Every error the app answers is JSON
``{"error_code", "message"}`` on one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import anyio
import h11
import uvicorn
from fastapi import FastAPI, Request
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
# json.loads makes a Python object of every value (an empty list costs 56 bytes for its 2), so
# 64 MiB of "[]," would cost over 2 GB. Commas: (N, 784) pixels and an index of N rows. Brackets:
# an image and its 28 rows each. Quotes: the keys, and dataframe_split's 784 column names.
# Counted inside strings too, an over-count no pixel request reaches.
JSON_BUDGET = (
    ((b",",), MAX_ROWS * (SIDE * SIDE + 1) + 4096, "JSON values (commas)"),
    ((b"[", b"{"), MAX_ROWS * (SIDE + 1) + 64, "JSON lists and objects"),
    ((b'"',), 2 * (SIDE * SIDE + 256), "JSON strings (quotes)"),
)
# Seconds a connection may send nothing while its head or body arrives.
TIMEOUT = 5.0
# Seconds for the request line and headers to arrive, from the connect, trickled or not.
HEAD_SECONDS = 5.0
# The most of an incomplete head uvicorn (h11) holds before it answers 400.
HEAD_BYTES = 65536 + 1
# Seconds for a body to arrive: 64 MiB needs about 1 MB/s.
REQUEST_SECONDS = 60.0
# Threads parsing bodies and running models: each may hold a parsed body (a few hundred MB).
WORKERS = 8
# Bytes of bodies being read or answered, in all: as many full bodies as there are workers.
BODY_BYTES = WORKERS * MAX_BODY
# Connections at once (uvicorn's limit_concurrency, a 503 beyond): a socket and a head each.
CONNECTIONS = 1024
# The listen backlog: a burst of connects waits here instead of being dropped.
BACKLOG = 512
# A loopback server's names: any other Host is a page rebound to 127.0.0.1 (DNS rebinding).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ALLOWED_METHODS = "GET, HEAD, POST"
# The status of digitlab's errors that a request causes, where not 400.
STATUS = {UnknownModel: HTTPStatus.NOT_FOUND, ModelBusy: HTTPStatus.SERVICE_UNAVAILABLE}


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
    raise HTTPException(400, 'no pixels found: send {"inputs": [[...784 numbers...]]}')


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
    ``bound``: bound to loopback, only the loopback names, the bound address and ``allowed``;
    bound elsewhere (0.0.0.0 included), any name unless ``allowed`` names some (``"*"``: any).
    A request without Host passes: browsers, the only clients a rebinding attack can use, always
    send one. Not Starlette's TrustedHostMiddleware: it refuses a request without Host, answers
    in plain text, and cannot allow names by the bound address."""
    if header is None or "*" in allowed or not (allowed or is_loopback(bound)):
        return True
    return host_name(header) in {*LOOPBACK_NAMES, bound, *(a.lower() for a in allowed)}


def parse_json(raw: bytearray) -> Any:
    """The body's JSON, refused (400) when it holds more values, lists or strings than pixels of
    MAX_ROWS images need (``JSON_BUDGET``), counted on the bytes before ``json.loads`` builds
    them: memory then follows the pixels a request can carry, not the tokens it is made of.
    Counting bytes over-counts in any encoding JSON allows (UTF-8, -16, -32 spell ``[`` alike)."""
    for characters, limit, what in JSON_BUDGET:
        if (count := sum(raw.count(c) for c in characters)) > limit:
            raise HTTPException(
                400,
                f"the body holds {count} {what}, more than pixels of {MAX_ROWS} images need "
                f"({limit}): send (N, 28, 28) or (N, 784) numbers, 1 to {MAX_ROWS} images "
                "per request",
            )
    try:
        return json.loads(raw)
    except RecursionError:  # json's parser recurses per level: 100 000 "[" would end the thread
        raise HTTPException(
            400, "the JSON nests too deep: pixels need 3 levels of lists at most"
        ) from None
    except (ValueError, UnicodeDecodeError) as e:
        message = f"the body is not JSON ({str(e).splitlines()[0][:80]}): send JSON"
        raise HTTPException(400, message) from None


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The one-line JSON answer of every error."""
    body = {"error_code": HTTPStatus(status).name, "message": message}
    return JSONResponse(body, status, headers=headers)


class Connection(H11Protocol):
    """uvicorn's HTTP/1.1 connection, closed without an answer when its request line and headers
    are not all there ``head_seconds`` after the connect, or ``idle`` seconds pass without data
    before they are: uvicorn itself waits on a new connection for as long as it stays open."""

    head_seconds, idle = HEAD_SECONDS, TIMEOUT

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_due = self.loop.time() + self.head_seconds
        self.head_timer: asyncio.TimerHandle | None = self.wait_for_head()

    def wait_for_head(self) -> asyncio.TimerHandle:
        due = min(self.head_due, self.loop.time() + self.idle)
        return self.loop.call_at(due, self.transport.close)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_timer is not None:  # None: the head is in (or refused), the app times it
            self.head_timer.cancel()
            self.head_timer = self.wait_for_head() if self.conn.their_state is h11.IDLE else None

    # uvicorn types its override None; asyncio.Protocol's may return True to keep the transport.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that closes its sending side once its request is out (``nc -N``) still gets
        its answer (uvicorn would close the connection); one that does before its head is in
        is closed."""
        return self.head_timer is None or None


class BodyRoom:
    """Bytes of bodies held at once, at most ``total``: a body waits until it fits (one body is
    always let in, whatever its size, so none waits forever)."""

    def __init__(self, total: int) -> None:
        self.total, self.held, self.changed = total, 0, asyncio.Condition()

    @contextlib.asynccontextmanager
    async def holding(self, size: int):
        async with self.changed:
            await self.changed.wait_for(lambda: self.held == 0 or self.held + size <= self.total)
            self.held += size
        try:
            yield
        finally:
            async with self.changed:
                self.held -= size
                self.changed.notify_all()


class Server:
    """digitlab-serve bound to its address, not yet serving: ``serve_forever()``, then
    ``shutdown()`` (from another thread) and ``server_close()``. ``server_address``: (host,
    port) as bound."""

    def __init__(self, config: uvicorn.Config, listening: socket.socket) -> None:
        self.uvicorn, self.socket = uvicorn.Server(config), listening
        self.server_address = listening.getsockname()[:2]
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or, in the main thread, Ctrl-C)."""
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
    # Bound by hand, not socket.create_server: its OSError rewrites strerror, which the
    # command's one-line error quotes.
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(BACKLOG)
    except OSError:
        listening.close()
        raise
    models = models if models is not None else ModelCache(client.tracking_uri)
    threads, room = anyio.CapacityLimiter(workers), BodyRoom(body_bytes)
    app = FastAPI(
        title="digitlab-serve",
        description="Digits over REST (MLflow's scoring protocol) and a page to draw one on.",
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        # Starlette's 404, and its 405 for a path served by other methods (the app raises
        # neither): one 405 for every method it serves nowhere, else a 404
        method, path = request.method, request.url.path
        if e.status_code in (404, 405) and method not in ALLOWED_METHODS.split(", "):
            message = f"method {method} is not served: use {ALLOWED_METHODS}"
            return error(405, message, {"Allow": ALLOWED_METHODS})
        if e.status_code in (404, 405) and method == "POST":
            return error(404, f"cannot POST to {path}: use /invocations or /draw")
        if e.status_code in (404, 405):
            return error(404, f"no page {path}: try /, /models or POST /invocations")
        return error(e.status_code, str(e.detail), e.headers)

    @app.exception_handler(DigitlabError)
    async def refused(request: Request, e: DigitlabError) -> JSONResponse:
        # bad pixels or a bad drawing (400), a model not here (404) or not loaded yet (503)
        status = next((s for kind, s in STATUS.items() if isinstance(e, kind)), 400)
        return error(status, str(e), {"Retry-After": "5"} if status == 503 else None)

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception) -> JSONResponse:
        # a bug or a failing store: one line for the client, the trace logged
        log.error("%s %s failed", request.method, request.url.path, exc_info=e)
        message = "the server failed on this request (its log says why): retry, or report it"
        return error(500, message)

    async def in_thread(function, *args):
        return await anyio.to_thread.run_sync(function, *args, limiter=threads)

    async def read_body(request: Request) -> bytearray:
        """The body within ``timeout`` of silence and ``request_seconds`` in all (else 408)."""
        body, chunks = bytearray(), request.stream()
        try:
            with anyio.fail_after(request_seconds):
                while True:
                    with anyio.fail_after(timeout):
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        return body
                    body += chunk
        except TimeoutError:
            raise HTTPException(
                408,
                f"the body stopped arriving ({timeout:g} s without data, or over "
                f"{request_seconds:g} s in all): send it whole at once",
            ) from None
        except ClientDisconnect:  # the client is gone: no one to answer
            raise HTTPException(400, "the client left") from None

    async def answer(request: Request, work) -> JSONResponse:
        """``work(body's JSON, model)`` in a worker, once the body is checked on its headers
        (415, 411, 413), has room (``BodyRoom``) and has arrived."""
        kind = request.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        if kind != "application/json":
            message = f"the body is {kind}: send JSON with Content-Type: application/json"
            raise HTTPException(415, message)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise HTTPException(411, "send a Content-Length header")
        if (size := int(length)) > MAX_BODY:
            raise HTTPException(413, f"the request is {size} bytes: at most {MAX_BODY} per request")
        async with room.holding(size):
            raw = await read_body(request)
            uri = request.query_params.get("model", default_model)
            return JSONResponse(await in_thread(lambda: work(parse_json(raw), models.get(uri))))

    def scored(body: Any, model) -> dict:
        out = model.predict(as_pixels(mlflow_inputs(body)))
        return {"predictions": {k: v.tolist() for k, v in out.items()}}

    def drawn(body: Any, model) -> dict:
        if not isinstance(body, dict) or "png" not in body:
            raise HTTPException(400, 'send {"png": canvas.toDataURL()}')
        image = mnistify(decode_png(body["png"]))
        out = model.predict(image[None])
        return {
            "probabilities": out["probabilities"][0].tolist(),
            "digit": int(out["digit"][0]),
            "image": image.tolist(),
        }

    def get(path: str, summary: str) -> Callable[[Callable], Callable]:
        """A GET route in the API's description, with HEAD beside it out of the description:
        one route for both would describe one operation twice (FastAPI warns of the duplicate
        operation id, and a client generator would see two)."""

        def route(endpoint: Callable) -> Callable:
            app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)
            return app.get(path, summary=summary)(endpoint)

        return route

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

    @get("/models", "The models ?model= may pick")
    async def listed() -> dict:
        allowed = getattr(models, "allowed", None)
        return {"default": default_model, "models": await in_thread(offered, client, allowed)}

    @get("/health", "Liveness: OK while it runs")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("OK")

    @get("/ready", "Readiness: the default model")
    async def ready() -> PlainTextResponse:
        try:  # a dictionary look-up once loaded (the CLI loads it before serving)
            await in_thread(models.get, default_model)
        except DigitlabError as e:  # not ready (a 503 keeps a balancer asking), not absent
            raise HTTPException(503, f"not ready: {e}", {"Retry-After": "5"}) from None
        return PlainTextResponse("READY")

    bound = listening.getsockname()[1]  # the port, when asked for any free one
    registry = CollectorRegistry()  # the app's own: several apps may live in one process

    @get("/metrics", "Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # Last: the page and nothing else under /, its 404s answered by http_error above.
    app.mount("/", StaticFiles(packages=[("digitlab.serving", "static")], html=True))
    routes = {getattr(route, "path", "") for route in app.routes} | {"/", "/index.html"}
    requests = Counter(
        "digitlab_serve_requests",
        "Requests answered, by method, route and status",
        ["method", "route", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "digitlab_serve_request_seconds",
        "Seconds from a request's head to its answer, by route",
        ["route"],
        registry=registry,
    )

    # In front of every route: the Host check (403), Connection: close on every answer (one
    # request per connection, so the head deadline covers every request), and the counts for
    # /metrics (by route: any other path is "other", not a label per URL).
    async def guard(scope, receive, send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started, status = time.perf_counter(), [500]
        route = scope["path"] if scope["path"] in routes else "other"

        async def send_closing(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        addressed = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        try:
            if host_allowed(addressed, host, allowed_hosts):
                await app(scope, receive, send_closing)
            else:
                name = host_name(addressed or "")
                await error(
                    403,
                    f"Host {name!r} is not this server's: browse to http://127.0.0.1:{bound}/, "
                    f"or allow that name (digitlab-serve --allow-host {name})",
                )(scope, receive, send_closing)
        finally:
            requests.labels(scope["method"], route, str(status[0])).inc()
            seconds.labels(route).observe(time.perf_counter() - started)

    head = {"head_seconds": min(head_seconds, request_seconds), "idle": timeout}
    config = uvicorn.Config(
        guard,
        http=type("Connection", (Connection,), head),
        lifespan="off",
        log_config=None,  # the application's logging, not uvicorn's own setup
        access_log=False,
        timeout_keep_alive=int(max(1, timeout)),
        limit_concurrency=CONNECTIONS,
        h11_max_incomplete_event_size=HEAD_BYTES,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    return Server(config, listening)
