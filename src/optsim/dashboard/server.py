"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, on 127.0.0.1 by default.

Routes (GET only): ``/`` the page; ``/static/<file>`` its script and style (from this package) and
``plotly.min.js`` (from the installed ``plotly`` package); ``/api/runs``, ``/api/run/<id>``,
``/api/trace/<id>``, ``/api/curves`` and ``/api/export`` (:mod:`optsim.dashboard.data`). Every
response carries a Content-Security-Policy whose ``default-src 'self'`` forbids loading anything from
elsewhere, so the page works offline and a stray external link fails in the browser (and the tests).
A store that is absent or damaged answers 503 with a message that names the fix; the page shows it.
"""
from __future__ import annotations

import errno
import json
import math
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .data import (
    Query,
    StoreUnavailable,
    export_plot,
    list_runs,
    plot_curves_data,
    run_detail,
    trace_columns,
)

__all__ = ["CSP", "make_server", "plotly_js", "serve"]

#: sent with every response: nothing but this server may be loaded (inline styles are allowed: plotly
#: sets them on its SVG; images may be data: URLs, as plotly's own icons are)
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_EXPORT_TYPES = {"png": "image/png", "pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


def plotly_js() -> Path:
    """plotly.js as the ``plotly`` Python package ships it (``pip install plotly``)."""
    try:
        import plotly
    except ImportError:
        raise RuntimeError("the dashboard draws with plotly.js from the plotly package: pip install plotly") from None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly.min.js is missing from the plotly package ({path}): reinstall plotly")
    return path


class Handler(BaseHTTPRequestHandler):
    server_version = "optsim-dashboard"
    store_path: Path = Path("runs.db")
    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(_finite(obj), allow_nan=False, default=str).encode(), "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = unquote(url.path)
        params = parse_qs(url.query, keep_blank_values=False)
        try:
            if route in ("/", "/index.html"):
                return self._file(STATIC / "index.html")
            if route == "/favicon.ico":
                return self._file(STATIC / "favicon.svg")
            if route.startswith("/static/"):
                name = route[len("/static/"):]
                if name == "plotly.min.js":
                    return self._file(plotly_js())
                if "/" in name or name.startswith(".") or not (STATIC / name).is_file():
                    return self._json(404, {"error": f"no file {route}"})
                return self._file(STATIC / name)
            if route.startswith("/api/"):
                return self._api(route[len("/api/"):], params)
            return self._json(404, {"error": f"no page {route}"})
        except StoreUnavailable as e:
            return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e), "store": str(self.store_path)})
        except KeyError as e:
            return self._json(404, {"error": e.args[0] if e.args else "not found"})
        except (ValueError, RuntimeError) as e:
            return self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):  # the browser went away
            return None
        except Exception as e:  # noqa: BLE001 (anything else: one line for the page, the traceback in the terminal)
            traceback.print_exc()
            return self._json(500, {"error": f"{route}: {type(e).__name__}: {e}"})

    def _file(self, path: Path) -> None:
        self._send(200, path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))

    def _api(self, route: str, params: dict[str, list[str]]) -> None:
        def one(name, default=None):
            v = params.get(name)
            return v[-1] if v else default

        def integer(name, default):
            v = one(name)
            try:
                return default if v is None else int(v)
            except ValueError:
                raise ValueError(f"{name}={v!r} must be an integer") from None

        store = self.store_path
        if route == "runs":
            return self._json(200, {"store": str(store), **list_runs(store, Query.from_params(params))})
        if route.startswith("run/"):
            return self._json(200, run_detail(store, route[len("run/"):]))
        if route.startswith("trace/"):
            cols = [c for item in params.get("columns", []) for c in item.split(",") if c]
            return self._json(200, trace_columns(store, route[len("trace/"):], cols, integer("max_points", 2000)))
        if route == "curves":
            return self._json(200, plot_curves_data(store, Query.from_params(params), one("x", "rounds"), one("y"),
                                                    integer("max_points", 1000), one("best") in ("1", "true")))
        if route == "export":
            fmt = one("format", "png")
            body, name = export_plot(store, Query.from_params(params), one("x", "rounds"), one("y"), fmt,
                                     one("best") in ("1", "true"))
            return self._send(200, body, _EXPORT_TYPES[fmt], {"Content-Disposition": f'attachment; filename="{name}"'})
        return self._json(404, {"error": f"no endpoint /api/{route}"})


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as None (JSON has no such numbers; browsers reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _free_port(host: str, start: int) -> int | None:
    for port in range(start + 1, min(start + 50, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    return None


def make_server(store: str | Path, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True) -> ThreadingHTTPServer:
    """A server for the store at ``store`` (not started: call ``serve_forever``); ``port=0`` takes a free
    one (``server.server_address``). A port in use raises a one-line error naming the next free one."""
    plotly_js()  # fail now, not at the first page load
    handler = type("DashboardHandler", (Handler,), {"store_path": Path(store), "quiet": quiet})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            free = _free_port(host, port)
            hint = f": use --port {free}" if free else ": pick another --port (or --port 0 for any free one)"
            raise RuntimeError(f"port {port} on {host} is in use{hint}") from None
        raise
    server.daemon_threads = True
    return server


def serve(store: str | Path, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True,
          ready: threading.Event | None = None) -> None:
    """Serve the dashboard until interrupted."""
    server = make_server(store, host, port, quiet)
    h, p = server.server_address[:2]
    print(f"optsim dashboard: http://{h}:{p}/ (store {store}, read-only); Ctrl-C stops it", file=sys.stderr)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    finally:
        server.server_close()


