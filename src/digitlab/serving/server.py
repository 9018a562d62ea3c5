"""The REST server and the draw-a-digit page, on the standard library's HTTP server.

    POST /invocations[?model=URI]  MLflow's scoring format: {"inputs": pixels} (or "instances",
                                   or a bare list); pixels (N, 28, 28) or (N, 784), 0..255
                                   -> {"predictions": {"probabilities": (N, 10), "digit": (N,)}}
    POST /draw[?model=URI]         {"png": canvas data URL} -> the drawing made MNIST-like and
                                   its {"probabilities", "digit", "image"}
    GET  /                         the page; /models the models it can pick; /health "OK"

Hand-written rather than ``mlflow models serve`` because the page, the choice of model per
request and a 4xx with one line for every bad request (size limit included) are one small
server here, where MLflow's scoring app would need a second process and answers some bad inputs
with a 500.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

from digitlab.errors import DigitlabError
from digitlab.serving.mnistify import decode_png, mnistify
from digitlab.serving.model import as_pixels
from digitlab.serving.models import ModelCache, UnknownModel, available

log = logging.getLogger(__name__)
# A full batch of 10 000 images as JSON integers is about 12 MB; more is a client's mistake.
MAX_BODY = 16 * 1024 * 1024


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


class Handler(BaseHTTPRequestHandler):
    """One request; the server holds the model cache (``self.server.models``)."""

    server_version = "digitlab-serve"

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

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
                "models": available(self.server.client),
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

    def _json_body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the request is {int(length)} bytes: at most {MAX_BODY} per request",
            )
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"the body is not JSON ({str(e).splitlines()[0][:80]}): send JSON",
            ) from None

    def _answer(self, route) -> None:
        parts = urlsplit(self.path)
        try:
            kind, payload = route(parts.path, parse_qs(parts.query))
            status = HTTPStatus.OK
        except RequestError as e:
            status, kind, payload = e.status, "application/json", _error(e.status, str(e))
        except UnknownModel as e:
            status, kind, payload = (
                HTTPStatus.NOT_FOUND,
                "application/json",
                _error(HTTPStatus.NOT_FOUND, str(e)),
            )
        except DigitlabError as e:  # bad pixels or a bad drawing: the client's to fix
            status, kind, payload = (
                HTTPStatus.BAD_REQUEST,
                "application/json",
                _error(HTTPStatus.BAD_REQUEST, str(e)),
            )
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, via logging
        log.info("%s %s", self.address_string(), format % args)


def _error(status: HTTPStatus, message: str) -> dict[str, str]:
    return {"error_code": status.name, "message": message}


def make_server(
    client,
    default_model: str | None,
    host: str = "127.0.0.1",
    port: int = 0,
    trusted: tuple[str, ...] = (),
) -> ThreadingHTTPServer:
    """The server, bound (port 0: a free one) but not yet serving: call ``serve_forever()``."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.client, server.default_model = client, default_model
    server.models = ModelCache(client.tracking_uri, trusted)
    return server
