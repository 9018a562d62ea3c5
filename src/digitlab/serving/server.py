"""The REST server and the draw-a-digit page, on the standard library's HTTP server.

    POST /invocations[?model=URI]  MLflow's scoring format: {"inputs": pixels} (or "instances",
                                   or a bare list); pixels (N, 28, 28) or (N, 784), 0..255
                                   -> {"predictions": {"probabilities": (N, C), "digit": (N,)}}
    POST /draw[?model=URI]         {"png": canvas data URL} -> the drawing made MNIST-like and
                                   its {"probabilities", "digit", "image"}
    GET  /                         the page; /models the models it can pick; /health "OK"

Hand-written rather than ``mlflow models serve`` because the page, the choice of model per
request and a 4xx with one line for every bad request (size limit included) are one small
server here, where MLflow's scoring app would need a second process and answers some bad inputs
with a 500.

As a service (experiments/SERVING.md has the figures):

- A fixed pool of ``workers`` threads answers requests, one request per connection (no
  keep-alive, so an open connection never holds a worker between requests). Accepted connections
  wait in a queue of at most ``queued``; when it is full the listening thread waits too, and new
  connections wait in the kernel's listen backlog (``BACKLOG``): a burst is answered late, never
  reset, and no connection costs a thread of its own.
- A connection that sends nothing for ``timeout`` seconds is dropped (408 if its body was under
  way), and so is one whose request takes longer than ``request_seconds`` in all, trickled or not.
- Bodies: ``application/json`` only (415 otherwise: a browser sends a cross-origin JSON POST only
  after a preflight, which this server does not grant), at most ``MAX_BODY`` bytes (413, checked
  on Content-Length before reading), nested at most as deep as Python's recursion allows (400).
- Host check against DNS rebinding (``host_allowed``): a server bound to a loopback address
  answers only requests addressed to 127.0.0.1, localhost, ::1 or ``allowed_hosts`` (403).
- Every error is JSON ``{"error_code", "message"}`` on one line, the standard library's own
  (bad request line, header too long, unknown method) included.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import queue
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

from digitlab.errors import DigitlabError
from digitlab.serving.mnistify import decode_png, mnistify
from digitlab.serving.model import as_pixels
from digitlab.serving.models import ModelCache, UnknownModel, offered

log = logging.getLogger(__name__)
# 10 000 images (MAX_ROWS) of 784 values up to 255 are 18 MB as compact JSON and 39 MB with
# json.dumps' default ", " separators; more is a client's mistake.
MAX_BODY = 64 * 1024 * 1024
# Seconds a connection may send nothing: a client mid-request never pauses that long.
TIMEOUT = 5.0
# Seconds for a whole request to arrive, and again for its answer to leave: 64 MiB needs about
# 1 MB/s, and a client trickling bytes within TIMEOUT still lets go of its worker.
REQUEST_SECONDS = 60.0
# Worker threads: each may hold a body at MAX_BODY parsed (a few hundred MB), so not more.
WORKERS = 8
# Accepted connections waiting for a worker, beyond which they wait in the kernel's backlog.
QUEUED = 128
# The listen backlog (socketserver's default is 5): a burst of hundreds of connections waits
# here instead of having its connects dropped. Linux caps it at net.core.somaxconn (4096).
BACKLOG = 512
# The names under which a loopback server is reached: any other Host is a page that rebound
# its own name to 127.0.0.1 (DNS rebinding), and gets a 403.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ALLOWED_METHODS = "GET, HEAD, POST"
# Escaped in the log: a request line cannot forge log lines or send terminal escapes.
CONTROL_CHARACTERS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


class RequestError(Exception):
    """An HTTP error status with its one-line reason."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


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


class DeadlineReader(io.RawIOBase):
    """A connection's reading side: each read waits at most ``idle`` seconds for data, and all of
    them end ``total`` seconds after the first, so a trickle cannot hold a worker either."""

    def __init__(self, connection: socket.socket, idle: float, total: float) -> None:
        self.connection, self.idle = connection, idle
        self.deadline = time.monotonic() + total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long to arrive")
        self.connection.settimeout(min(self.idle, left))
        return self.connection.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    """One request; the server holds the model cache (``self.server.models``)."""

    server_version = "digitlab-serve"
    # HTTP/1.0 answers close the connection: a client cannot keep a worker between requests.
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain file waits forever: read through the deadline instead
        self.rfile = io.BufferedReader(
            DeadlineReader(self.connection, self.server.idle_timeout, self.server.request_seconds)
        )

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_HEAD(self) -> None:  # GET's headers without its body (_send leaves it out)
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def __getattr__(self, name: str):
        # handle_one_request looks up do_<METHOD>: every other method gets a JSON 405, not the
        # standard library's HTML 501.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"method {self.command} is not served: use {ALLOWED_METHODS}",
            {"Allow": ALLOWED_METHODS},
        )

    def _get(self, path: str, query: dict) -> tuple[str, bytes | Any]:
        if path == "/health":
            return "text/plain", b"OK"
        if path in ("/", "/index.html"):
            return "text/html; charset=utf-8", files("digitlab.serving").joinpath(
                "page.html"
            ).read_bytes()
        if path == "/models":
            return "application/json", {
                "default": self.server.default_model,
                "models": offered(self.server.client, getattr(self.server.models, "allowed", None)),
            }
        raise RequestError(
            HTTPStatus.NOT_FOUND, f"no page {path}: try /, /models or POST /invocations"
        )

    def _post(self, path: str, query: dict) -> tuple[str, Any]:
        if path not in ("/invocations", "/draw"):
            raise RequestError(
                HTTPStatus.NOT_FOUND, f"cannot POST to {path}: use /invocations or /draw"
            )
        body = self._json_body()
        model = self.server.models.get(query.get("model", [self.server.default_model])[0])
        if path == "/draw":
            if not isinstance(body, dict) or "png" not in body:
                raise RequestError(HTTPStatus.BAD_REQUEST, 'send {"png": canvas.toDataURL()}')
            image = mnistify(decode_png(body["png"]))
            out = model.predict(image[None])
            return "application/json", {
                "probabilities": out["probabilities"][0].tolist(),
                "digit": int(out["digit"][0]),
                "image": image.tolist(),
            }
        out = model.predict(as_pixels(mlflow_inputs(body)))
        return "application/json", {"predictions": {k: v.tolist() for k, v in out.items()}}

    def _check_host(self) -> None:
        host = self.headers.get("Host")
        bound = self.server.server_address[0]
        if not host_allowed(host, bound, self.server.allowed_hosts):
            raise RequestError(
                HTTPStatus.FORBIDDEN,
                f"Host {host_name(host)!r} is not this server's: browse to "
                f"http://127.0.0.1:{self.server.server_port}/, or allow that name "
                f"(digitlab-serve --allow-host {host_name(host)})",
            )

    def _json_body(self) -> Any:
        kind = self.headers.get_content_type()  # text/plain when there is no Content-Type
        if kind != "application/json":
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"the body is {kind}: send JSON with Content-Type: application/json",
            )
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request is {int(length)} bytes: at most {MAX_BODY} per request",
            )
        return _parse_json(self._read(int(length)))

    def _read(self, length: int) -> bytes:
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise RequestError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"the body stopped arriving ({self.server.idle_timeout:g} s without data, or "
                f"over {self.server.request_seconds:g} s in all): send it whole at once",
            ) from None
        if len(raw) < length:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the body ended after {len(raw)} of its {length} bytes: send all of it",
            )
        return raw

    def _answer(self, route) -> None:
        parts = urlsplit(self.path)
        try:
            self._check_host()
            kind, payload = route(parts.path, parse_qs(parts.query))
        except RequestError as e:
            return self._send_error(e.status, str(e))
        except UnknownModel as e:
            return self._send_error(HTTPStatus.NOT_FOUND, str(e))
        except DigitlabError as e:  # bad pixels or a bad drawing: the client's to fix
            return self._send_error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception:  # a bug or a failing store: one line for the client, the trace logged
            log.exception("%s %s failed", self.command, parts.path)
            return self._send_error(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "the server failed on this request (its log says why): retry, or report it",
            )
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self._send(HTTPStatus.OK, kind, data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (bad request line, header too long...), as JSON."""
        status = HTTPStatus(code)
        self._send_error(status, message or status.phrase)

    def _send_error(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
        self.close_connection = True
        data = json.dumps({"error_code": status.name, "message": message}).encode()
        self._send(status, "application/json", data, headers)

    def _send(self, status: HTTPStatus, kind: str, data: bytes, headers: dict | None = None):
        # The reads may have left the socket a short timeout; a client that does not read its
        # answer still lets go of the worker after REQUEST_SECONDS.
        self.connection.settimeout(self.server.request_seconds)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, via logging
        message = (format % args).translate(CONTROL_CHARACTERS)
        log.info("%s %s", self.address_string(), message)


def _parse_json(raw: bytes) -> Any:
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


class Server(HTTPServer):
    """HTTPServer whose requests a fixed pool of threads answers (see the module docstring)."""

    request_queue_size = BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        workers: int = WORKERS,
        queued: int = QUEUED,
        timeout: float = TIMEOUT,
        request_seconds: float = REQUEST_SECONDS,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        # Before binding: a failed bind calls server_close, which uses the queue.
        self.pending: queue.Queue = queue.Queue(maxsize=queued)
        self.workers: list[threading.Thread] = []
        super().__init__(address, Handler)
        self.idle_timeout, self.request_seconds = timeout, request_seconds
        self.allowed_hosts = tuple(allowed_hosts)
        for i in range(workers):
            worker = threading.Thread(target=self._work, name=f"digitlab-serve-{i}", daemon=True)
            worker.start()
            self.workers.append(worker)

    def process_request(self, request, client_address) -> None:
        self.pending.put((request, client_address))  # waits while the queue is full

    def _work(self) -> None:
        while (item := self.pending.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client left mid-answer: nothing to fix here
            log.info("%s: %s", client_address[0], error)
        else:
            log.exception("a request from %s failed", client_address[0])

    def server_close(self) -> None:
        """Stop listening, drop the connections no worker has taken, and end the workers."""
        super().server_close()
        while True:
            try:
                item = self.pending.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        for _ in self.workers:
            self.pending.put(None)


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
    queued: int = QUEUED,
    timeout: float = TIMEOUT,
    request_seconds: float = REQUEST_SECONDS,
) -> Server:
    """The server, bound (port 0: a free one) but not yet serving: call ``serve_forever()``, then
    ``shutdown()`` (from another thread) and ``server_close()``.

    ``models``: what ``?model=`` picks from (``get(uri)`` -> an object with ``predict``); default
    a :class:`ModelCache` of ``client``'s store. ``allowed_hosts``: names besides the loopback
    ones a client may address (``host_allowed``). The rest: see the module's constants.
    """
    server = Server((host, port), workers, queued, timeout, request_seconds, allowed_hosts)
    server.client, server.default_model = client, default_model
    server.models = models if models is not None else ModelCache(client.tracking_uri, trusted)
    return server
