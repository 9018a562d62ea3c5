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
  keep-alive, so an open connection never holds a worker between requests). One thread reads
  every connection's request, head and body (:class:`Intake`), before a worker takes it, so a
  client trickling it holds no worker; bodies read and not yet answered hold at most
  ``body_bytes``, beyond which none is read until a worker is done with one. Accepted
  connections, arriving or waiting for a worker, number at most ``queued``; beyond that the
  listening thread waits, and new connections wait in the kernel's listen backlog
  (``BACKLOG``): a burst is answered late, never reset, and no connection costs a thread of its
  own.
- A connection whose request line and headers have not all arrived ``head_seconds`` after it
  connected is dropped, trickled or not, and so is one that sends nothing for ``timeout``
  seconds; a body that pauses that long, or takes longer than ``request_seconds``, is a 408.
- Bodies: ``application/json`` only (415 otherwise: a browser sends a cross-origin JSON POST only
  after a preflight, which this server does not grant), at most ``MAX_BODY`` bytes (413, checked
  on Content-Length before reading), holding no more JSON values than pixels of ``MAX_ROWS``
  images need (400, counted on the bytes before they are parsed: :func:`check_json_budget`), and
  nested at most as deep as Python's recursion allows (400).
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
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
# Seconds a connection may send nothing: a client mid-request never pauses that long.
TIMEOUT = 5.0
# Seconds for the request line and headers to arrive, in all, from the connect: clients send
# them at once, so one trickling them (a byte every few seconds) is dropped, not waited for.
HEAD_SECONDS = 5.0
# The most of a head read before a worker takes the connection (the standard library refuses a
# request line or a header line over 64 KiB: 414, 431): a waiting head costs at most this much.
HEAD_BYTES = 65536 + 1
# Seconds for a body to arrive, and again for an answer to leave: 64 MiB needs about 1 MB/s,
# and a client trickling bytes within TIMEOUT still lets go of its worker.
REQUEST_SECONDS = 60.0
# Worker threads: each may hold a body at MAX_BODY parsed (a few hundred MB), so not more.
WORKERS = 8
# Bytes of bodies read and not yet answered, in all: as many full bodies as there are workers.
# Beyond it no body is read until a worker is done with one (the clients wait on TCP).
BODY_BYTES = WORKERS * MAX_BODY
# Accepted connections whose requests arrive or wait for a worker, beyond which they wait in the
# kernel's backlog: each costs a socket and its bytes (at most HEAD_BYTES of head).
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
    """A connection's reading side: first the bytes :class:`Intake` read already (``head``), then
    the socket's, each read waiting at most ``idle`` seconds for data and all of them ending at
    ``deadline`` (``time.monotonic()``), so a trickle cannot hold a worker either."""

    def __init__(
        self, connection: socket.socket, idle: float, deadline: float, head: bytes | bytearray = b""
    ) -> None:
        self.connection, self.idle, self.deadline = connection, idle, deadline
        self.head = memoryview(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
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

    def __init__(
        self, request, client_address, server, head: bytes = b"", connected=None, deadline=None
    ):
        """``head``: what :class:`Intake` read of the request; ``connected``: when (monotonic);
        ``deadline``: when what is left of the body must be in (None: ``request_seconds`` from
        when it is read)."""
        self.head, self.body_deadline = head, deadline
        self.connected = time.monotonic() if connected is None else connected
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain file waits forever: read through the deadline instead
        # The head's deadline, for what of a long head Intake left to read; the body's is set
        # when it is read.
        self.reader = DeadlineReader(
            self.connection,
            self.server.idle_timeout,
            head_deadline(self.server, self.connected),
            self.head,
        )
        self.rfile = io.BufferedReader(self.reader)

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
        self.reader.deadline = (
            self.body_deadline
            if self.body_deadline is not None
            else time.monotonic() + self.server.request_seconds
        )
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
        except ModelBusy as e:
            return self._send_error(HTTPStatus.SERVICE_UNAVAILABLE, str(e), {"Retry-After": "5"})
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


def head_deadline(server, connected: float) -> float:
    """When a connection made at ``connected`` must have sent its request line and headers."""
    return connected + min(server.head_seconds, server.request_seconds)


def head_end(data: bytearray, new: int) -> int | None:
    """Where the blank line that ends a request's headers ends in ``data``, of which the last
    ``new`` bytes just arrived; None while it has not (the standard library takes bare ``\\n``
    line ends too)."""
    start = max(0, len(data) - new - 3)
    ends = [i + len(mark) for mark in (b"\n\r\n", b"\n\n") if (i := data.find(mark, start)) >= 0]
    return min(ends) if ends else None


# The body's length as the standard library reads it (the first Content-Length, digits only).
CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d{1,12})\r?\n", re.IGNORECASE)


@dataclass
class Arrival:
    """A connection whose request is still arriving."""

    connection: socket.socket
    address: Any
    connected: float
    last: float  # when its last bytes arrived
    data: bytearray = field(default_factory=bytearray)
    length: int | None = None  # the whole request's bytes, once its head says (None: head)
    due: float = 0.0  # when its body must be in, once it is read
    paused: bool = False  # not read while the bodies read fill BODY_BYTES


class Intake:
    """One thread reading every new connection's request, head and body, however slowly it
    arrives, before a worker takes it (``ready(connection, address, data, connected, deadline)``):
    a client trickling its request costs a socket and the bytes it sent, never a worker.

    The head must be all there ``head_deadline`` after the connect, with no ``idle_timeout`` of
    silence, or the connection is closed without an answer (``dropped(connection)``), as the
    standard library drops a connection that times out before its request line. A head over
    ``HEAD_BYTES`` goes to a worker as it is, the rest of the request due by the same deadline.
    A body of up to ``MAX_BODY`` bytes (by its Content-Length) is read here too, due
    ``request_seconds`` after its head, with no ``idle_timeout`` of silence, and goes to a worker
    whole, or late with a ``deadline`` already past (the worker answers 408). Bodies read here and
    not yet answered hold at most ``body_bytes`` in all (``taken`` counts, ``release`` gives
    back): beyond that, bodies are not read until a worker gives some back.
    """

    def __init__(self, server, ready: Callable, dropped: Callable, body_bytes: int) -> None:
        self.server, self.ready, self.dropped, self.body_bytes = server, ready, dropped, body_bytes
        self.selector = selectors.DefaultSelector()
        self.wake, self.waker = socket.socketpair()  # another thread's call wakes select()
        self.wake.setblocking(False)
        self.waker.setblocking(False)
        self.selector.register(self.wake, selectors.EVENT_READ)
        self.added: list[Arrival] = []
        self.held = 0  # bytes of bodies read here and not yet released by a worker
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="digitlab-serve-intake", daemon=True)
        self.thread.start()

    def add(self, connection: socket.socket, address) -> None:
        """Read ``connection``'s request from now on (called by the listening thread)."""
        now = time.monotonic()
        with self.lock:
            self.added.append(Arrival(connection, address, now, now))
        self._wake()

    def release(self, size: int) -> None:
        """A worker is done with a request whose body held ``size`` bytes of ``body_bytes``."""
        if size:
            with self.lock:
                self.held -= size
            self._wake()  # paused bodies may go on

    def close(self) -> None:
        """Stop reading and drop the connections whose requests were still arriving."""
        self.closing = True
        self._wake()
        self.thread.join(10)
        self.selector.close()
        self.wake.close()
        self.waker.close()

    def _wake(self) -> None:
        try:
            self.waker.send(b"\0")
        except BlockingIOError:  # a wake-up is pending already
            pass

    def _run(self) -> None:
        arrivals: dict[socket.socket, Arrival] = {}
        while not self.closing:
            now = time.monotonic()
            for arrival in [a for a in arrivals.values() if now >= self._due(a)]:
                self._late(arrivals, arrival)
            due = min((self._due(a) for a in arrivals.values()), default=None)
            for key, _ in self.selector.select(None if due is None else max(0, due - now)):
                if key.fileobj is self.wake:
                    self._woken(arrivals)
                elif (arrival := arrivals.get(key.fileobj)) is not None:
                    try:
                        self._receive(arrivals, arrival)
                    except Exception:  # this connection's problem: never the others'
                        log.exception("reading a request from %s failed", arrival.address[0])
                        if arrival.connection in arrivals:
                            self._drop(arrivals, arrival)
        for arrival in list(arrivals.values()) + self.added:
            self.dropped(arrival.connection)

    def _due(self, arrival: Arrival) -> float:
        if arrival.paused:  # waiting for room, not for the client
            return arrival.due
        if arrival.length is None:
            return min(
                head_deadline(self.server, arrival.connected),
                arrival.last + self.server.idle_timeout,
            )
        return min(arrival.due, arrival.last + self.server.idle_timeout)

    def _woken(self, arrivals: dict) -> None:
        try:
            while self.wake.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            added, self.added = self.added, []
            room = self.held < self.body_bytes
        for arrival in added:
            try:
                arrival.connection.setblocking(False)
                self.selector.register(arrival.connection, selectors.EVENT_READ)
            except (OSError, ValueError):  # closed already: the client left
                self.dropped(arrival.connection)
            else:
                arrivals[arrival.connection] = arrival
        if room:
            for arrival in [a for a in arrivals.values() if a.paused]:
                arrival.paused, arrival.last = False, time.monotonic()
                self.selector.register(arrival.connection, selectors.EVENT_READ)

    def _receive(self, arrivals: dict, arrival: Arrival) -> None:
        want = 65536 if arrival.length is None else arrival.length - len(arrival.data)
        try:
            chunk = arrival.connection.recv(min(65536, want))
        except BlockingIOError:
            return
        except OSError:  # reset by the client
            return self._drop(arrivals, arrival)
        arrival.last = time.monotonic()
        if arrival.length is not None:
            arrival.data += chunk
            with self.lock:
                self.held += len(chunk)
                full = self.held >= self.body_bytes
            if not chunk or len(arrival.data) >= arrival.length:
                # whole, or the client's end: a short body is the worker's to answer (400)
                return self._hand_over(arrivals, arrival, None if not chunk else arrival.last)
            if full:
                self._pause(arrivals)
            return
        if not chunk:  # the client's end: what came (if anything) is the worker's to answer
            if not arrival.data:
                return self._drop(arrivals, arrival)
            return self._hand_over(arrivals, arrival, None)
        arrival.data += chunk
        end = head_end(arrival.data, len(chunk))
        if end is None:
            if len(arrival.data) >= HEAD_BYTES:  # the standard library refuses it, or reads on
                deadline = head_deadline(self.server, arrival.connected)
                self._hand_over(arrivals, arrival, deadline)
            return
        found = CONTENT_LENGTH.search(arrival.data, 0, end)
        body = int(found.group(1)) if found else 0
        if not 0 < body <= MAX_BODY or len(arrival.data) >= end + body:
            return self._hand_over(arrivals, arrival, arrival.last)
        arrival.length = end + body
        arrival.due = arrival.last + self.server.request_seconds
        with self.lock:
            self.held += len(arrival.data)
            full = self.held >= self.body_bytes
        if full:
            self._pause(arrivals)

    def _pause(self, arrivals: dict) -> None:
        """Bodies fill ``body_bytes``: read none until a worker releases some."""
        for arrival in arrivals.values():
            if arrival.length is not None and not arrival.paused:
                arrival.paused = True
                self.selector.unregister(arrival.connection)

    def _late(self, arrivals: dict, arrival: Arrival) -> None:
        if arrival.length is None:
            return self._drop(arrivals, arrival)
        self._hand_over(arrivals, arrival, time.monotonic())  # past its deadline: a 408

    def _hand_over(self, arrivals: dict, arrival: Arrival, deadline: float | None) -> None:
        """To a worker: ``deadline`` for what it may still read (None: its own for a body)."""
        self._forget(arrivals, arrival)
        arrival.connection.setblocking(True)
        held = len(arrival.data) if arrival.length is not None else 0
        self.ready(
            arrival.connection,
            arrival.address,
            arrival.data,  # not copied: a body of MAX_BODY would be twice in memory
            arrival.connected,
            deadline,
            held,
        )

    def _forget(self, arrivals: dict, arrival: Arrival) -> None:
        if not arrival.paused:
            self.selector.unregister(arrival.connection)
        del arrivals[arrival.connection]

    def _drop(self, arrivals: dict, arrival: Arrival) -> None:
        self._forget(arrivals, arrival)
        self.dropped(arrival.connection)


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
        head_seconds: float = HEAD_SECONDS,
        body_bytes: int = BODY_BYTES,
    ) -> None:
        self.idle_timeout, self.request_seconds = timeout, request_seconds
        self.head_seconds = head_seconds
        # Before binding: a failed bind calls server_close, which uses these.
        self.pending: queue.Queue = queue.Queue()  # requests read, waiting for a worker
        self.admitted = threading.BoundedSemaphore(queued)  # accepted, no worker yet
        self.workers: list[threading.Thread] = []
        self.intake = Intake(self, self._arrived, self._drop, body_bytes)
        super().__init__(address, Handler)
        self.allowed_hosts = tuple(allowed_hosts)
        for i in range(workers):
            worker = threading.Thread(target=self._work, name=f"digitlab-serve-{i}", daemon=True)
            worker.start()
            self.workers.append(worker)

    def process_request(self, request, client_address) -> None:
        self.admitted.acquire()  # waits while ``queued`` connections wait already
        self.intake.add(request, client_address)

    def _arrived(self, request, client_address, data, connected, deadline, held) -> None:
        self.pending.put((request, client_address, data, connected, deadline, held))

    def _drop(self, request) -> None:
        self.shutdown_request(request)
        self.admitted.release()

    def finish_request(
        self, request, client_address, head: bytes = b"", connected=None, deadline=None
    ) -> None:
        self.RequestHandlerClass(request, client_address, self, head, connected, deadline)

    def _work(self) -> None:
        while (item := self.pending.get()) is not None:
            self.admitted.release()
            request, client_address, data, connected, deadline, held = item
            try:
                self.finish_request(request, client_address, data, connected, deadline)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                self.intake.release(held)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client left mid-answer: nothing to fix here
            log.info("%s: %s", client_address[0], error)
        else:
            log.exception("a request from %s failed", client_address[0])

    def server_close(self) -> None:
        """Stop listening, drop the connections no worker has taken, and end the workers."""
        super().server_close()
        self.intake.close()
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
    head_seconds: float = HEAD_SECONDS,
    body_bytes: int = BODY_BYTES,
) -> Server:
    """The server, bound (port 0: a free one) but not yet serving: call ``serve_forever()``, then
    ``shutdown()`` (from another thread) and ``server_close()``.

    ``models``: what ``?model=`` picks from (``get(uri)`` -> an object with ``predict``); default
    a :class:`ModelCache` of ``client``'s store. ``allowed_hosts``: names besides the loopback
    ones a client may address (``host_allowed``). The rest: see the module's constants.
    """
    server = Server(
        (host, port),
        workers,
        queued,
        timeout,
        request_seconds,
        allowed_hosts,
        head_seconds,
        body_bytes,
    )
    server.client, server.default_model = client, default_model
    server.models = models if models is not None else ModelCache(client.tracking_uri, trusted)
    return server
