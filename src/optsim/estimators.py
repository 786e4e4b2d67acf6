"""Gradient estimators, written once: the recursions that variance-reduced methods apply to each
client's estimate, and the paired minibatch they are fed with.

Each rule maps a client's previous estimate ``prev`` and stochastic gradients at the new and the
old point (``new``, ``old``: the *same* samples at both, :func:`paired_minibatch`) to the new
estimate, row by row (clients are rows; replica-stacked tensors work alike):

* :func:`sarah` -- SARAH / the PAGE estimator's cheap branch (Nguyen et al. 2017, "SARAH", eq. 2;
  Li, Bao, Zhang, Richtárik 2021, "PAGE", Alg. 1): prev + (new - old);
* :func:`page` -- PAGE (Li et al. 2021, Alg. 1): a fresh (large-batch or full) gradient with
  probability p, else :func:`sarah`;
* :func:`mvr` -- momentum variance reduction / STORM (Cutkosky, Orabona 2019, "Momentum-based
  variance reduction in non-convex SGD", eq. for d_t): new + (1 - a)(prev - old); a = 1 is SGD;
* :func:`mvr_increment` -- the same as an increment of prev (DASHA-PP's k_i):
  new - old - a (prev - old);
* :func:`svrg` -- loopless SVRG (Kovalev, Horváth, Richtárik 2020, "Don't jump through hoops and
  remove those loops", Alg. 1): new - old + (the full gradient at the reference point), ``old``
  taken at the reference point.

The methods that use them: PAGE, VR-MARINA, DASHA-PAGE / -MVR, DASHA-PP-PAGE / -MVR, Rennala MVR,
compressed Gluon (SARAH / MVR), ProxSkip-VR (L-SVRG).
"""
from __future__ import annotations

import torch

__all__ = ["paired_minibatch", "sarah", "page", "mvr", "mvr_increment", "svrg"]


def paired_minibatch(problem, x_new: torch.Tensor, x_old: torch.Tensor, batch: int, generator: torch.Generator,
                     clients: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch gradients of each client (default all; else the rows ``clients``) at ``x_new`` and
    ``x_old`` ((d,) models) on the same ``batch`` samples, drawn uniformly with replacement; one
    oracle call for both points."""
    rows = torch.arange(problem.n, device=problem.device) if clients is None else clients
    r = rows.shape[0]
    idx = problem.sample_indices(batch, generator, clients)
    X = torch.cat([x_new.expand(r, problem.d), x_old.expand(r, problem.d)])
    G = problem.sample_grads(X, torch.cat([idx, idx]), clients=torch.cat([rows, rows]))
    return G[:r], G[r:]


def sarah(prev: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """prev + (new - old)."""
    return prev + (new - old)


def page(prev: torch.Tensor, new: torch.Tensor, old: torch.Tensor, fresh: torch.Tensor | None) -> torch.Tensor:
    """``fresh`` (the round's coin came up: a large-batch or full gradient) when given, else
    :func:`sarah`."""
    return fresh if fresh is not None else sarah(prev, new, old)


def mvr(prev: torch.Tensor, new: torch.Tensor, old: torch.Tensor, a: float) -> torch.Tensor:
    """new + (1 - a)(prev - old), a in (0, 1] the weight of the new gradient."""
    return new + (1 - a) * (prev - old)


def mvr_increment(prev: torch.Tensor, new: torch.Tensor, old: torch.Tensor, a: float) -> torch.Tensor:
    """:func:`mvr` minus prev, computed as new - old - a (prev - old)."""
    return new - old - a * (prev - old)


def svrg(new: torch.Tensor, old: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """new - old + reference: ``old`` at the reference point, ``reference`` the full gradient there."""
    return new - old + reference
