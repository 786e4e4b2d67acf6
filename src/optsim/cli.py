"""The ``optsim`` command."""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
from pathlib import Path

from .trace import AXES, PLOT_METRICS

__all__ = ["main"]


def _store(args):
    from .experiment.store import ResultStore

    salvage = bool(getattr(args, "salvage", False))
    return ResultStore(args.store, salvage=salvage) if getattr(args, "store", None) else ResultStore(salvage=salvage)


def _cmd_run(args) -> int:
    from .experiment import build_problem, load_config, run
    from .experiment.store import force_mode

    cfg = load_config(args.config, args.set)
    out = Path(args.out or cfg.out)
    if args.set and not args.out:  # the overrides make another config: its own folder, named after them
        from .trace import safe_filename

        out = out.with_name(f"{out.name}--{safe_filename('_'.join(args.set))[:60]}")
    problem = build_problem(cfg)
    store = None if args.no_store else _store(args)
    where = f"; runs stored in {store.path}" if store else ""
    print(f"optsim: {cfg.name}: {problem.name}, n={problem.n} clients, d={problem.d}; results in {out}/{where}",
          file=sys.stderr)
    if args.backend == "distributed":  # N worker processes over torch.distributed (optsim/distributed/)
        from .distributed import launch
        from .experiment.runs import claim_output

        claim_output(out, cfg, overwrite=args.force)
        print(f"optsim: distributed backend, {args.nproc or 2} worker processes", file=sys.stderr)
        traces = launch(cfg, args.nproc or 2, out, problem=problem, store=store,
                        force=force_mode(args.force, args.redo_stale),
                        progress=not args.quiet, plot=not args.no_plot)
    elif args.nproc is not None:
        raise ValueError("--nproc starts worker processes: use it with --backend distributed")
    else:
        from .experiment.runs import claim_output

        claim_output(out, cfg, overwrite=args.force)
        traces = run(cfg, out, progress=not args.quiet, problem=problem, plot=not args.no_plot, store=store,
                     force=force_mode(args.force, args.redo_stale))
    if not args.no_plot:
        for f in sorted(out.glob(f"{cfg.name}_*.png")):
            print(f"figure: {f}")
    bad = [t for t in traces if t.status == "failed"]
    return 1 if bad else 0


def _first_sentence(doc: str | None) -> str:
    """The docstring's first sentence, whole (joined across its lines)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    abbreviations = ("al", "e.g", "i.e", "Sec", "Alg", "Thm", "Eq", "Def", "Fig", "Prop", "Cor", "Lem", "vs", "cf")
    for i in range(len(text) - 1):
        if text[i] == "." and text[i + 1] == " " and not text[max(0, i - 4):i].endswith(abbreviations):
            return text[: i + 1]
    return text


def _table(rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their longest entry; the last column is printed whole."""
    if not rows:
        return
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + ("  " if widths else "") + r[-1])


def _cmd_list(args) -> int:
    from .compress import COMPRESSORS
    from .data import DATASETS, PARTITIONS
    from .methods import METHODS
    from .problems import PROBLEMS
    from .sampling import SAMPLERS

    what = args.what
    if what == "methods":
        _table([("method", "components", "stepsize", "paper")] +
               [(name, ", ".join(cls.uses) or "-", cls.stepsize_source, cls.paper)
                for name, cls in sorted(METHODS.items())])
    elif what == "compressors":
        _table([(name, _first_sentence(cls.__doc__)) for name, cls in sorted(COMPRESSORS.items())])
    elif what == "problems":
        _table([(name, _first_sentence(cls.__doc__)) for name, cls in sorted(PROBLEMS.items())])
    elif what == "datasets":
        for d in DATASETS:
            print(d)
        print(f"(partitions: {', '.join(PARTITIONS)})")
    elif what == "samplers":
        for s in SAMPLERS:
            print(s)
    elif what == "attacks":
        from .robust import ATTACKS

        _table([("attack", "parameters", "what the Byzantine clients send")] +
               [(name, _defaults(cls.__init__, skip=3) or "-", _first_sentence(cls.__doc__))
                for name, cls in sorted(ATTACKS.items())])
    elif what == "aggregators":
        from .robust import AGGREGATORS

        _table([("aggregator", "parameters", "rule")] +
               [(name, ", ".join(f"{k}={v}" for k, v in cls.defaults.items()) or "-", _first_sentence(cls.__doc__))
                for name, cls in sorted(AGGREGATORS.items())])
        print("(any rule also takes bucketing: s and nnm: true, e.g. {name: cm, bucketing: 2})")
    elif what == "optimizers":
        from .optim import OPTIMIZERS, PAPERS

        _table([("optimizer", "class", "paper")] +
               [(name, cls.__name__, PAPERS[name]) for name, cls in sorted(OPTIMIZERS.items())])
        print("(also any torch.optim class by lower-case name, e.g. adamw; torch:NAME picks torch's)")
    return 0


def _defaults(fn, skip: int) -> str:
    """'key=default, ...' of a function's keyword parameters after the first ``skip``."""
    import inspect

    ps = list(inspect.signature(fn).parameters.values())[skip:]
    return ", ".join(f"{p.name}={p.default}" for p in ps if p.default is not inspect.Parameter.empty)


def _cmd_info(args) -> int:
    from .experiment import build_problem, load_config

    cfg = load_config(args.config, args.set)
    problem = build_problem(cfg)
    for k, v in problem.info().items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        print(f"{k:<30} {v}")
    return 0


def _where(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--where '{item}' must look like key.sub=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _cmd_sweep(args) -> int:
    import yaml

    from .experiment.config import ConfigError, _set
    from .experiment.store import force_mode
    from .experiment.sweep import best_of_grid, expand_sweep, run_sweep

    path = Path(args.config)
    if not path.exists():
        raise ConfigError(f"config file '{path}' not found")
    data = yaml.safe_load(path.read_text())
    for ov in args.set:
        k, _, v = ov.partition("=")
        _set(data, k.strip(), v)
    base, jobs = expand_sweep(data)
    store = _store(args)
    print(f"optsim: sweep {base.name}: {len(jobs)} runs; store {store.path}", file=sys.stderr)
    try:
        result = run_sweep(data, store, jobs=args.jobs, force=force_mode(args.force, args.redo_stale),
                           progress=not args.quiet, batch=None if args.batch == "auto" else int(args.batch))
    except KeyboardInterrupt:
        print("optsim: sweep interrupted; run the same command again to resume it", file=sys.stderr)
        return 130
    counts: dict[str, int] = {}
    for st in result.status.values():
        counts[st] = counts.get(st, 0) + 1
    print("runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if base.sweep.tune:
        print("best of grid (lowest median final metric):")
        for row in best_of_grid(base, result):
            tuned = ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in base.sweep.tune)
            edge = (f"  on the edge of the grid in {', '.join(row['edge'])}: widen it, the best value may lie "
                    "beyond" if row["edge"] else "")
            print(f"  {row['method']:<24} {tuned:<40} {row['median_final']:.3e} ({row['runs']} runs){edge}")
    return 0


def _cmd_runs(args) -> int:
    import csv
    import json

    store = _store(args)
    if args.action == "ls":
        filters = {k: v for k, v in (("experiment", args.experiment), ("status", args.status)) if v}
        from .experiment.store import other_build

        rows = store.runs(**filters)
        print(f"{'id':>5}  {'hash':<16} {'experiment':<18} {'label':<40} {'status':<11} {'rounds':>7} {'final':>10}"
              f"  build")
        for r in rows:
            fm = f"{r['final_metric']:.3e}" if r["final_metric"] is not None else "-"
            build = other_build(r) or "this"
            print(f"{r['id']:>5}  {r['hash']:<16} {str(r['experiment'])[:18]:<18} {str(r['label'])[:40]:<40} "
                  f"{store.status(r):<11} {r['rounds'] or 0:>7} {fm:>10}  {build}")
        return 0
    if args.action == "show":
        for key in args.ids:
            row = store.get(key)
            if row is None:
                raise ValueError(f"no run '{key}' in {store.path} (see `optsim runs ls`)")
            info = {k: row[k] for k in row.keys() if k not in ("trace", "checkpoint", "config")}
            info["config"] = json.loads(row["config"])
            info["checkpoint"] = f"{len(row['checkpoint'])} bytes" if row["checkpoint"] else None
            t = store.trace(row)
            if t is not None:
                info["last"] = {c: t.last(c) for c in ("round", "bits_up", "grad_evals", "sim_time", t.meta.get("metric", "f_gap"))}
            print(json.dumps(info, indent=2, default=str))
        return 0
    if args.action == "rm":
        n = store.remove(args.ids)
        print(f"removed {n} run(s)")
        return 0
    # export: one row per logged point of every selected run
    filters = {"experiment": args.experiment} if args.experiment else {}
    records = []
    for row, t in store.traces(**filters):
        for i in range(len(t)):
            rec = {"run_id": row["id"], "hash": row["hash"], "experiment": row["experiment"], "label": t.label,
                   "method": t.method, "seed": row["seed"], "status": row["status"]}
            rec.update({c: t.rows[c][i] for c in t.rows})
            records.append(rec)
    out = Path(args.out or f"runs.{args.format}")
    if args.format == "csv":
        with out.open("w", newline="") as f:
            if records:
                w = csv.DictWriter(f, fieldnames=list(records[0]))
                w.writeheader()
                w.writerows(records)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError("Parquet export needs pyarrow: pip install 'optsim[parquet]' (or pyarrow)") from None
        pq.write_table(pa.Table.from_pylist(records), out)
    print(f"wrote {len(records)} rows to {out}")
    return 0


def _cmd_report(args) -> int:
    from .experiment.report import write_report

    out = write_report(_store(args), Path(args.out), experiment=args.experiment, where=_where(args.where),
                       x=args.x)
    print(f"report: {out}")
    return 0


def _cmd_plot(args) -> int:
    from .plots import plot_traces
    from .trace import Trace

    if args.results is None:
        from .experiment.report import plot_groups, select

        runs = select(_store(args), args.experiment, _where(args.where))
        if not runs:
            raise ValueError("no stored runs match these filters (see `optsim runs ls`)")
        y = args.y or runs[0][2].meta.get("metric", "f_gap")
        stem = Path(args.out or "results") / f"plot_{args.experiment or 'runs'}_{y}"
        for f in plot_groups([(c, t) for _, c, t in runs], args.x, y, stem, title=args.experiment or "",
                             formats=("png", "pdf"), top=args.top, best=args.best):
            print(f"figure: {f}")
        return 0
    folder = Path(args.results)
    files = sorted((folder / "traces").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no traces in {folder}/traces: run a config first (optsim run CONFIG)")
    traces = [Trace.load(f) for f in files]
    y = args.y or traces[0].meta.get("metric", "f_gap")
    out = plot_traces(traces, args.x, y, folder / f"plot_{y}", title=folder.name)
    for f in out:
        print(f"figure: {f}")
    return 0


def _cmd_dashboard(args) -> int:
    from .dashboard.data import Query, StoreUnavailable, list_runs
    from .dashboard.server import serve
    from .experiment.store import default_store_path

    store = Path(args.store) if args.store else default_store_path()
    try:
        list_runs(store, Query())
    except StoreUnavailable as e:  # the page shows it too; the server keeps running (a sweep may create it)
        print(f"optsim: dashboard: {e}", file=sys.stderr)
    try:
        serve(store, host=args.host, port=args.port, quiet=not args.verbose, reproduce=args.reproduce,
              launch=not args.no_launch)
    except KeyboardInterrupt:
        print("optsim: dashboard stopped", file=sys.stderr)
    return 0


def _cmd_reproduce(args) -> int:
    from .reproduce import run_recipe, status_table

    if args.list or not args.ids:
        for rid, status, title in status_table():
            print(f"{rid:<28} {status:<12} {title}")
        return 0
    failed = 0
    for rid in args.ids:
        outcome, seconds = run_recipe(rid, Path(args.out), fast=args.fast)
        print(f"{rid}: {outcome.verdict} ({outcome.measured}) [{seconds:.1f}s]")
        for f in outcome.figures:
            print(f"  figure: {f}")
        failed += not outcome.passed
    return 1 if failed else 0


def _cmd_privacy(args) -> int:
    from .privacy import available_accountants, epsilon, noise_for_epsilon

    setting = dict(sample_rate=args.sample_rate, steps=args.steps, delta=args.delta, sampling=args.sampling,
                   population=args.population)
    names = available_accountants("poisson" if args.sample_rate == 1 else args.sampling)
    if args.noise is not None:
        rows = [(name, f"{epsilon(args.noise, accountant=name, **setting):.6g}") for name in names]
    else:
        rows = [(name, f"{noise_for_epsilon(args.epsilon, accountant=name, **setting):.6g}") for name in names]
    _table([("accountant", "epsilon" if args.noise is not None else "noise multiplier")] + rows)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optsim", description="Research simulator for distributed and federated optimization.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the methods of a config, save traces and figures")
    r.add_argument("config")
    r.add_argument("--out", help="results folder (default: the config's 'out', else results/NAME)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set stop.max_rounds=100")
    r.add_argument("--no-plot", action="store_true")
    r.add_argument("--force", action="store_true", help="redo runs the results store already holds")
    r.add_argument("--redo-stale", action="store_true",
                   help="redo the stored runs that another optsim build made (see `optsim runs ls`)")
    r.add_argument("--no-store", action="store_true", help="do not use the results store")
    r.add_argument("--store", help="results database (default optsim-results/runs.db or $OPTSIM_RESULTS/runs.db)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.add_argument("--backend", choices=["simulated", "distributed"], default="simulated",
                   help="simulated: all clients in this process; distributed: worker processes over "
                   "torch.distributed (gloo on CPU, NCCL on GPU), each owning a slice of the clients")
    r.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="worker processes of --backend distributed (default 2)")
    r.set_defaults(func=_cmd_run)
    li = sub.add_parser("list", help="list methods, compressors, problems, datasets, samplers, attacks, aggregators "
                        "or optimizers")
    li.add_argument("what", choices=["methods", "compressors", "problems", "datasets", "samplers", "attacks",
                                     "aggregators", "optimizers"])
    li.set_defaults(func=_cmd_list)
    i = sub.add_parser("info", help="the problem's sizes and constants (n, d, L, L_i, L_tilde, mu, kappa, f*)")
    i.add_argument("config")
    i.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    i.set_defaults(func=_cmd_info)
    pl = sub.add_parser("plot", help="draw traces: of a results folder, or from the results store")
    pl.add_argument("results", nargs="?", help="a results folder (default: read the results store)")
    pl.add_argument("--experiment", help="store: runs of this experiment (config 'name')")
    pl.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="store: filter by a config field")
    pl.add_argument("--x", nargs="+", default=["rounds", "bits_up"], choices=AXES)
    pl.add_argument("--y", default=None, choices=PLOT_METRICS)
    pl.add_argument("--out", help="store: folder of the figure (default results/)")
    pl.add_argument("--top", type=int, default=None, metavar="N",
                    help="store: only the N curves with the lowest final metric")
    pl.add_argument("--best", action="store_true", help="store: only the best curve of each method")
    pl.add_argument("--store")
    pl.set_defaults(func=_cmd_plot)
    sw = sub.add_parser("sweep", help="run a config's sweep.grid in parallel through the results store")
    sw.add_argument("config")
    sw.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    sw.add_argument("--force", action="store_true", help="redo runs the store already holds")
    sw.add_argument("--redo-stale", action="store_true", help="redo the stored runs that another optsim build made")
    sw.add_argument("--batch", default="auto", help="runs per lock-step batch on one problem: auto (32 when the "
                    "problem is large enough), 1 (off) or a number")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("--store")
    sw.add_argument("-q", "--quiet", action="store_true")
    sw.set_defaults(func=_cmd_sweep)
    ru = sub.add_parser("runs", help="the results store: ls | show ID.. | export | rm ID..")
    ru.add_argument("action", choices=["ls", "show", "export", "rm"])
    ru.add_argument("ids", nargs="*", help="run ids or hash prefixes (show, rm)")
    ru.add_argument("--experiment")
    ru.add_argument("--status", choices=["running", "finished", "diverged", "failed", "interrupted"])
    ru.add_argument("--format", choices=["csv", "parquet"], default="csv")
    ru.add_argument("--salvage", action="store_true",
                    help="export: read a damaged store read-only, keeping the runs that can be read")
    ru.add_argument("--out")
    ru.add_argument("--store")
    ru.set_defaults(func=_cmd_runs)
    rep = sub.add_parser("report", help="one self-contained HTML page of figures and a table of runs")
    rep.add_argument("--experiment")
    rep.add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    rep.add_argument("--x", nargs="+", default=["rounds", "bits_up"])
    rep.add_argument("--out", default="results/report.html")
    rep.add_argument("--store")
    rep.set_defaults(func=_cmd_report)
    da = sub.add_parser("dashboard", help="a local web page over the results store (read-only): runs, plots, export")
    da.add_argument("--store", help="results database (default optsim-results/runs.db or $OPTSIM_RESULTS/runs.db)")
    da.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    da.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    da.add_argument("-v", "--verbose", action="store_true", help="log every request")
    da.add_argument("--reproduce", default="results/reproduce",
                    help="where `optsim reproduce` wrote its outcomes (its --out; default results/reproduce)")
    da.add_argument("--no-launch", action="store_true",
                    help="do not let the page start runs or sweeps (it may only on 127.0.0.1)")
    da.set_defaults(func=_cmd_dashboard)
    rp = sub.add_parser("reproduce", help="run a paper's recipe and check its claim (IDs of PAPERS.md)")
    rp.add_argument("ids", nargs="*", metavar="ID")
    rp.add_argument("--list", action="store_true", help="every ID with its status")
    rp.add_argument("--fast", action="store_true", help="a scaled-down version (under a minute)")
    rp.add_argument("--out", default="results/reproduce")
    rp.set_defaults(func=_cmd_reproduce)
    pr = sub.add_parser("privacy", help="epsilon of noisy rounds of client sampling (dp-accounting: RDP, PLD), "
                        "or the noise for a target epsilon")
    target = pr.add_mutually_exclusive_group(required=True)
    target.add_argument("--noise", type=float, metavar="SIGMA", help="noise multiplier (noise std / sensitivity)")
    target.add_argument("--epsilon", type=float, help="target epsilon: print the noise multiplier that meets it")
    pr.add_argument("--sample-rate", type=float, required=True, metavar="Q",
                    help="share of the clients in a round (C / population for --sampling fixed)")
    pr.add_argument("--steps", type=int, required=True, help="rounds")
    pr.add_argument("--delta", type=float, help="the delta of (epsilon, delta)-DP, e.g. 1e-5")
    pr.add_argument("--sampling", default="poisson",
                    help="poisson (each client with probability Q) or fixed (C of --population without "
                    "replacement, replace-one neighbours; RDP only)")
    pr.add_argument("--population", type=int, metavar="N", help="clients to sample from (--sampling fixed)")
    pr.set_defaults(func=_cmd_privacy)
    return p


def main(argv: list[str] | None = None) -> int:
    # set by the dashboard's launcher (optsim.dashboard.launch.CTRL_C_ENV), which stops a launch with SIGINT:
    # Ctrl-C's action even where this process started with SIGINT ignored (a shell's background jobs do)
    if os.environ.pop("OPTSIM_CTRL_C", None) and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("optsim: interrupted; finished traces are saved", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"optsim: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:
        print(f"optsim: error: the results store cannot be read ({e}); it may be damaged: move it aside and "
              "`optsim runs export --store FILE --salvage` what can still be read", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
