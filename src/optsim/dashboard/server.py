"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, on 127.0.0.1 by default.

Routes (GET only): ``/`` the page; ``/static/<file>`` its script and style (from this package) and
``plotly.min.js`` (from the installed ``plotly`` package); ``/api/runs`` (``group=KEY``),
``/api/run/<id>``, ``/api/trace/<id>``, ``/api/curves`` and ``/api/export`` (``band=minmax|se``,
``group=KEY``), ``/api/sweep`` (``param=KEY&stat=final|best``), ``/api/recipes`` and
``/api/recipe-file/<ID>/<figure>`` (the outcomes of ``optsim reproduce`` under its results folder)
(:mod:`optsim.dashboard.data`); ``/api/launch`` the state of the last launch. POST ``/api/launch``
(``{"path": CONFIG, "kind": "run"|"sweep"}``) and ``/api/launch/stop`` start and stop a run or sweep
(:mod:`optsim.dashboard.launch`), only on a loopback address and only from the page itself: a POST
needs the header ``X-Optsim-Dashboard``, which another site's page cannot send without a CORS
preflight this server never grants, and a Host (and Origin, when sent) of this server. Every
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
    recipe_file,
    recipe_outcomes,
    run_detail,
    sweep_data,
    trace_columns,
    warm_up,
)
from .launch import LaunchBusy, Launcher

__all__ = ["CSP", "make_server", "plotly_js", "serve"]

#: sent with every response: nothing but this server may be loaded (inline styles are allowed: plotly
#: sets them on its SVG; images may be data: URLs, as plotly's own icons are)
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
          ".pdf": "application/pdf"}
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
    reproduce_path: Path = Path("results/reproduce")
    launcher: Launcher | None = None
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
        try:
            body = json.dumps(obj, allow_nan=False, default=str)
        except ValueError:  # a NaN or infinity somewhere: walk the object only then
            body = json.dumps(_finite(obj), allow_nan=False, default=str)
        self._send(status, body.encode(), "application/json")

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

    def do_POST(self) -> None:
        route = unquote(urlsplit(self.path).path)
        try:
            if route not in ("/api/launch", "/api/launch/stop"):
                return self._json(404, {"error": f"no endpoint {route} (POST)"})
            if self.launcher is None:
                return self._json(403, {"error": "launching is off: the dashboard launches runs only when it listens "
                                                 "on 127.0.0.1 (optsim dashboard --host 127.0.0.1)"})
            refused = self._foreign()
            if refused:
                return self._json(403, {"error": refused})
            length = int(self.headers.get("Content-Length") or 0)
            if length > 65536:
                return self._json(413, {"error": "request too large"})
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._json(400, {"error": 'send JSON: {"path": "config.yaml", "kind": "run"}'})
            if not isinstance(body, dict):
                return self._json(400, {"error": 'send a JSON object: {"path": "config.yaml", "kind": "run"}'})
            if route == "/api/launch/stop":
                return self._json(200, self.launcher.stop())
            return self._json(202, self.launcher.start(str(body.get("path", "")), str(body.get("kind", "run"))))
        except LaunchBusy as e:
            return self._json(409, {"error": str(e)})
        except (ValueError, RuntimeError) as e:
            return self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return self._json(500, {"error": f"{route}: {type(e).__name__}: {e}"})

    def _foreign(self) -> str | None:
        """Why a POST is refused as coming from elsewhere than this server's page, or None."""
        if self.headers.get("X-Optsim-Dashboard") != "1":
            return "launch from the dashboard page (the request lacks its X-Optsim-Dashboard header)"
        port = self.server.server_address[1]
        hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        if self.headers.get("Host") not in hosts:
            return f"Host {self.headers.get('Host')!r} is not this dashboard: open it as http://127.0.0.1:{port}/"
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in hosts:
            return f"Origin {origin!r} is not this dashboard"
        return None

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
        band, group = one("band", "minmax"), one("group") or None
        if route == "runs":
            return self._json(200, {"store": str(store), **list_runs(store, Query.from_params(params), group)})
        if route.startswith("run/"):
            return self._json(200, run_detail(store, route[len("run/"):]))
        if route.startswith("trace/"):
            cols = [c for item in params.get("columns", []) for c in item.split(",") if c]
            return self._json(200, trace_columns(store, route[len("trace/"):], cols, integer("max_points", 2000)))
        if route == "curves":
            return self._json(200, plot_curves_data(store, Query.from_params(params), one("x", "rounds"), one("y"),
                                                    integer("max_points", 1000), one("best") in ("1", "true"),
                                                    band, group))
        if route == "export":
            fmt = one("format", "png")
            body, name = export_plot(store, Query.from_params(params), one("x", "rounds"), one("y"), fmt,
                                     one("best") in ("1", "true"), band=band, group=group)
            return self._send(200, body, _EXPORT_TYPES[fmt], {"Content-Disposition": f'attachment; filename="{name}"'})
        if route == "sweep":
            return self._json(200, sweep_data(store, Query.from_params(params), one("param", ""), one("y"),
                                              one("stat", "final"), band, group))
        if route == "recipes":
            return self._json(200, recipe_outcomes(self.reproduce_path))
        if route == "launch":
            if self.launcher is None:
                return self._json(200, {"state": "off"})
            return self._json(200, self.launcher.status())
        if route.startswith("recipe-file/"):
            rid, _, rel = route[len("recipe-file/"):].partition("/")
            return self._file(recipe_file(self.reproduce_path, rid, rel))
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_server(store: str | Path, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True,
                reproduce: str | Path = "results/reproduce", launch: bool = True,
                launch_limit_s: float = 3600.0) -> ThreadingHTTPServer:
    """A server for the store at ``store`` and the recipe outcomes under ``reproduce`` (the ``--out`` of
    ``optsim reproduce``) (not started: call ``serve_forever``); ``port=0`` takes a free one
    (``server.server_address``). A port in use raises a one-line error naming the next free one.
    ``launch``: the page may start runs and sweeps (one at a time, each stopped after
    ``launch_limit_s`` seconds; only on a loopback ``host``); ``server.launcher`` holds them."""
    plotly_js()  # fail now, not at the first page load
    warm_up()  # the method registry (parameter defaults of stored configs), not at the first request
    launcher = Launcher(store, launch_limit_s) if launch and host in LOOPBACK else None
    handler = type("DashboardHandler", (Handler,), {"store_path": Path(store), "reproduce_path": Path(reproduce),
                                                    "quiet": quiet, "launcher": launcher})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            free = _free_port(host, port)
            hint = f": use --port {free}" if free else ": pick another --port (or --port 0 for any free one)"
            raise RuntimeError(f"port {port} on {host} is in use{hint}") from None
        raise
    server.daemon_threads = True
    server.launcher = launcher  # type: ignore[attr-defined]
    return server


def serve(store: str | Path, host: str = "127.0.0.1", port: int = 8765, quiet: bool = True,
          ready: threading.Event | None = None, reproduce: str | Path = "results/reproduce",
          launch: bool = True) -> None:
    """Serve the dashboard until interrupted (a running launch is then stopped)."""
    server = make_server(store, host, port, quiet, reproduce, launch)
    h, p = server.server_address[:2]
    print(f"optsim dashboard: http://{h}:{p}/ (store {store}, read-only); Ctrl-C stops it", file=sys.stderr)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    finally:
        if server.launcher is not None:  # type: ignore[attr-defined]
            server.launcher.close()  # type: ignore[attr-defined]
        server.server_close()


