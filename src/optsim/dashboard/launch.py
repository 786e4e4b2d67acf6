"""Launching a run or a sweep from the dashboard: ``python -m optsim run|sweep CONFIG --store STORE``
as a subprocess of the command line, one at a time, with a time limit.

The config is validated first by the loader the command line uses
(:func:`optsim.experiment.load_config`: its one-line error comes back as the answer); then the
command runs in its own process, its output written to a log file, so the server only starts it and
reads its state: it never waits for it. The page polls :meth:`Launcher.status` (the log's last lines,
seconds so far, exit status) while the runs appear in the store as they finish.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "LaunchBusy", "Launcher"]

#: what the dashboard launches: the command line's ``run`` and ``sweep``
KINDS = ("run", "sweep")
#: set in a launched command's environment: :func:`optsim.cli.main` then restores Ctrl-C's action when
#: the command started with SIGINT ignored (as a dashboard started in a shell's background does), so
#: that a stop (SIGINT) interrupts the runs at a round's end with their checkpoints saved
CTRL_C_ENV = "OPTSIM_CTRL_C"


class LaunchBusy(RuntimeError):
    """A launch is already running (one at a time)."""


class Launcher:
    """At most one ``optsim run|sweep`` subprocess at a time for the store at ``store``, stopped after
    ``limit_s`` seconds; logs under ``logs`` (a temporary folder by default); ``cwd`` is where the
    command runs (its relative results folders land there)."""

    def __init__(self, store: str | Path, limit_s: float = 3600.0, logs: str | Path | None = None,
                 cwd: str | Path | None = None):
        if not limit_s > 0:
            raise ValueError(f"limit_s={limit_s}: give a positive time limit in seconds")
        self.store = Path(store).resolve()
        self.limit_s = float(limit_s)
        self.logs = Path(logs) if logs is not None else Path(tempfile.mkdtemp(prefix="optsim-dashboard-"))
        self.cwd = Path(cwd) if cwd is not None else Path.cwd()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._info: dict[str, Any] | None = None
        self._count = 0

    def start(self, path: str, kind: str = "run") -> dict[str, Any]:
        """Validate the config at ``path`` and start ``optsim KIND path``; returns :meth:`status`."""
        from ..experiment.config import ConfigError, load_config

        if kind not in KINDS:
            raise ValueError(f"unknown launch '{kind}': use run or sweep")
        if not path or not str(path).strip():
            raise ValueError("give the path of a config file (YAML), e.g. examples/quickstart.yaml")
        config = Path(str(path).strip()).expanduser()
        if not config.is_absolute():
            config = self.cwd / config
        try:
            cfg = load_config(config)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if kind == "sweep" and not cfg.sweep:
            raise ValueError(f"{config} has no 'sweep:' grid: launch it as a run, or add sweep.grid")
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                raise LaunchBusy(f"launch {self._info['id']} ({self._info['command']}) is still running: wait for "
                                 "it to end or stop it")
            self._count += 1
            log = self.logs / f"launch-{self._count}.log"
            self.logs.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "optsim", kind, str(config), "--store", str(self.store), "-q"]
            with open(log, "wb") as out:
                self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=self.cwd, start_new_session=True,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1", CTRL_C_ENV: "1"})
            self._info = {"id": self._count, "kind": kind, "config": str(config), "experiment": cfg.name,
                          "command": " ".join(["optsim", kind, str(config), "--store", str(self.store)]),
                          "pid": self._proc.pid, "log": str(log), "started": time.time(), "stopped": None}
            proc = self._proc
        threading.Thread(target=self._watch, args=(proc,), daemon=True).start()
        return self.status()

    def _watch(self, proc: subprocess.Popen) -> None:
        try:
            proc.wait(timeout=self.limit_s)
        except subprocess.TimeoutExpired:
            self._stop(proc, f"stopped after the time limit of {self.limit_s:g} s")

    def _stop(self, proc: subprocess.Popen, why: str) -> None:
        with self._lock:
            if proc.poll() is not None:
                return
            if self._info is not None and self._info["pid"] == proc.pid:
                self._info["stopped"] = why
            try:
                os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C: the runs save their checkpoints
            except ProcessLookupError:
                return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> dict[str, Any]:
        """Stop the running launch (as Ctrl-C would: interrupted runs keep their checkpoints)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise ValueError("no launch is running")
        self._stop(proc, "stopped from the dashboard")
        return self.status()

    def status(self, tail: int = 4000) -> dict[str, Any]:
        """The last launch: its command, state (running / finished / failed / stopped), exit status,
        seconds so far and the last ``tail`` characters of its output; ``{"state": "none"}`` before any."""
        with self._lock:
            if self._proc is None or self._info is None:
                return {"state": "none", "limit_s": self.limit_s}
            code = self._proc.poll()
            info = dict(self._info)
        if code is None:
            info["state"] = "running"
        else:
            info["state"] = "stopped" if info["stopped"] else "finished" if code == 0 else "failed"
        info["returncode"] = code
        info["seconds"] = round(time.time() - info["started"], 1)
        info["limit_s"] = self.limit_s
        try:
            with open(info["log"], "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - tail))
                info["output"] = f.read().decode("utf-8", "replace")
        except OSError:
            info["output"] = ""
        return info

    def close(self) -> None:
        """Stop a running launch (the server is shutting down)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._stop(proc, "stopped: the dashboard closed")
