"""``python -m optsim``: the ``optsim`` command (:mod:`optsim.cli`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
