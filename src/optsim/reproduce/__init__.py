"""Paper recipes (``optsim reproduce``)."""
from .registry import PAPER_IDS, RECIPES, Outcome, Recipe, recipe, run_recipe, status_table
from . import baselines  # noqa: F401  (registers the recipes)
from . import asynchronous, model_parallel  # noqa: F401  (A2, A3, L13, baseline-ringleader; A1, A5)
from . import compression  # noqa: F401  (C1 EF-BV, C2 shifted compression, C4 DASHA-PP)
from . import local  # noqa: F401  (L2, L7, L8, L9, baseline-proxskip)
from . import accelerated_local  # noqa: F401  (L1, L3, L4, L5, L6, L10, L11, L12)
from . import newton_rr  # noqa: F401  (C3, C5, C6, C7)
from . import neural  # noqa: F401  (M1, M2, M3, M4, M6, C8, A4)
from . import byzantine  # noqa: F401  (B1, B2, B3)
from . import sampling  # noqa: F401  (P1, P2, P3, P4)
from . import linear_systems  # noqa: F401  (S1, S2 in part, S3, S4)
from . import certification  # noqa: F401  (B5)
from . import privacy  # noqa: F401  (B4)
from . import optimizers  # noqa: F401  (M5, M7, M8, M9)
from . import stochastic  # noqa: F401  (S5, S6, S7, S8, S9)
from . import riemannian  # noqa: F401  (S10)

__all__ = ["PAPER_IDS", "RECIPES", "Outcome", "Recipe", "recipe", "run_recipe", "status_table"]
