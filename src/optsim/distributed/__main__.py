"""``torchrun [--nnodes ...] -m optsim.distributed CONFIG`` (or ``python -m optsim.distributed``):
one worker of a multi-machine run."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..channel.distributed import DistributedError
from .errors import DistributedRunError
from .worker import _worker


def main(argv: list[str] | None = None) -> int:
    """``torchrun [--nnodes ...] -m optsim.distributed CONFIG``: one worker of a multi-machine run."""
    from ..experiment import load_config
    from ..experiment.store import force_mode

    p = argparse.ArgumentParser(prog="python -m optsim.distributed",
                                description="One optsim worker under torchrun (see README: several machines).")
    p.add_argument("config")
    p.add_argument("--out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--store", help="results database written by rank 0 (default: none)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--redo-stale", action="store_true")
    p.add_argument("--timeout", type=float, default=None, help="seconds a collective waits (default 60)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        print("optsim.distributed: start it with torchrun (or use `optsim run CONFIG --backend distributed`)",
              file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.set)
    job = {"cfg": cfg, "out": str(Path(args.out or cfg.out)), "store": args.store,
           "force": force_mode(args.force, args.redo_stale),
           "progress": not args.quiet, "plot": not args.no_plot, "timeout": args.timeout, "compact": True}
    try:
        _worker(job)
    except (DistributedRunError, DistributedError) as e:
        print(f"optsim: error: rank {os.environ.get('RANK')}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
