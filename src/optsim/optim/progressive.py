"""Randomized Progressive Training (RPT) and Randomized (block) Coordinate Descent (RCD).

Both are gradient descent with a random diagonal sketch ``C`` of the gradient, ``E[C] = I``:

.. math::  x^{k+1} = x^k - \\gamma\\, C^k \\nabla f(x^k).

The parameters are split into ``B`` ordered blocks (the param groups, in order, when there are
several; otherwise the parameters, in order: e.g. the layers from the input).

* **RPT** samples a prefix length ``s in {1..B}`` with probabilities ``p_1..p_B``; blocks ``1..s``
  are active, block ``j`` with probability ``q_j = p_j + ... + p_B``, and an active block's gradient
  is rescaled by ``1/q_j`` (unbiased). Only the prefix's gradients are needed and only the prefix
  moves, as in progressive training, which trains the first layers first.
* **RCD** samples one block ``j`` with probability ``p_j`` and scales its gradient by ``1/p_j``
  (``sampling="single"``), or each block independently with probability ``p_j``
  (``sampling="independent"``).

Stepsize (``theory_stepsize``): with ``f`` ``L``-matrix-smooth (``f(x + h) <= f(x) + <grad f, h> +
h^T L h / 2``), ``gamma = 1 / lambda_max(E[C L C])`` gives ``E f(x^{k+1}) <= f(x^k) -
(gamma/2) ||grad f(x^k)||^2``, hence ``E[f(x^k) - f*] <= (1 - gamma mu)^k (f(x^0) - f*)`` under
``mu``-PL and ``min_k E||grad f||^2 <= 2 (f(x^0) - f^inf) / (gamma K)`` in general. For RPT,
``E[c_i c_j] = 1 / max(q_i, q_j)`` (a deeper active block implies the shallower one), so
``E[C L C] = L o W`` with ``W_ij = 1 / max(q_b(i), q_b(j))``; for block-diagonal
``L = Diag(L_j I)`` it is ``Diag(L_j / q_j)`` and ``gamma = min_j q_j / L_j``. For single-block
RCD, ``E[C L C] = Diag(L_jj / p_j)`` (the diagonal blocks of ``L``).

Status: the algorithm template (prefix sketches with the unbiased ``1/q_j`` rescaling; RCD as the
general diagonal-sketch method) is the paper's as summarized from its abstract and secondary
sources; the stepsize and rates above are our derivation of the standard sketched-gradient bound
(checked by the tests), not confirmed against the paper's theorems, whose numbers and constants
could not be read.

Reference:
    Szlendak, Gasanov, Richtárik (2023), "Understanding Progressive Training Through the
    Framework of Randomized Coordinate Descent", arXiv:2306.03626 (RPT and the RCD analysis).
    RCD: Nesterov (2012), Richtárik & Takáč (2014).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .closure import closure_loss
from .randomized import RandomizedOptimizer

__all__ = ["RCD", "RPT", "prefix_inclusion", "rcd_scales", "rpt_scales", "rpt_sketch_second_moment", "sketch_stepsize"]


def prefix_inclusion(probs: Sequence[float] | Tensor) -> Tensor:
    """``q_j = p_j + ... + p_B``: the probability that block ``j`` is in the sampled prefix."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    return p.flip(0).cumsum(0).flip(0)


def rpt_sketch_second_moment(q: Tensor, sizes: Sequence[int]) -> Tensor:
    """``W = E[c c^T]`` (d, d) of RPT's diagonal sketch: ``1 / max(q_b(i), q_b(j))``."""
    qq = torch.repeat_interleave(torch.as_tensor(q, dtype=torch.float64), torch.as_tensor(list(sizes)))
    return 1.0 / torch.maximum(qq[:, None], qq[None, :])


def sketch_stepsize(L: Tensor, second_moment: Tensor) -> float:
    """``1 / lambda_max(E[C L C])`` with ``E[C L C] = L o E[c c^T]`` for a diagonal sketch."""
    M = torch.as_tensor(L, dtype=torch.float64) * second_moment
    return float(1.0 / torch.linalg.eigvalsh(0.5 * (M + M.T))[-1])


def rpt_scales(probs: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` independent RPT sketches (n, B): ``1/q_j`` on a prefix of length ``s ~ probs``, 0 after it."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    s = torch.multinomial(p, n, replacement=True, generator=generator)                 # last active block
    on = torch.arange(p.shape[0])[None, :] <= s[:, None]
    return on.to(torch.float64) / prefix_inclusion(p)[None, :]


def rcd_scales(probs: Tensor, n: int, sampling: str = "single", generator: torch.Generator | None = None) -> Tensor:
    """``n`` independent RCD sketches (n, B): one block ``j ~ probs`` scaled by ``1/p_j`` (``"single"``),
    or each block with probability ``p_j``, scaled by ``1/p_j`` (``"independent"``)."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    B = p.shape[0]
    if sampling == "single":
        j = torch.multinomial(p, n, replacement=True, generator=generator)
        on = torch.arange(B)[None, :] == j[:, None]
    else:
        on = torch.rand(n, B, generator=generator, dtype=torch.float64) < p[None, :]
    return on.to(torch.float64) / p[None, :]


def _check_probs(probs, B: int, what: str) -> list[float]:
    if probs is None:
        return [1.0 / B] * B
    p = [float(v) for v in probs]
    if len(p) != B:
        raise ValueError(f"{what}: probs must have one entry per block ({B} blocks), got {len(p)}")
    if any(v < 0 for v in p):
        raise ValueError(f"{what}: probs must be >= 0")
    return p


class _BlockSketchGD(RandomizedOptimizer):
    """Common part: blocks, a generator whose state is saved with the optimizer, draw / step."""

    def __init__(self, params, lr: float, generator: torch.Generator | None, seed: int):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr))
        groups = self.param_groups
        self.blocks: list[list[tuple[dict, Tensor]]] = (
            [[(g, p) for p in g["params"]] for g in groups] if len(groups) > 1
            else [[(groups[0], p)] for p in groups[0]["params"]])
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._pending: Tensor | None = None

    _EXTRA = ("blocks", "generator", "_pending", "probs", "q", "sampling")

    def __getstate__(self):  # torch's keeps defaults, state and param_groups only
        return {**super().__getstate__(), **{k: getattr(self, k) for k in self._EXTRA if hasattr(self, k)}}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def _scales(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def draw(self) -> Tensor:
        """Draw the next step's block scales ``c`` (B,) (0 for inactive blocks); ``step`` uses them.
        Call it before computing gradients to compute only the active blocks' (``active()``)."""
        if self._pending is None:
            self._pending = self._scales()
        return self._pending

    def active(self) -> list[int]:
        """Indices of the blocks the next step moves (draws the scales if needed)."""
        return [j for j, c in enumerate(self.draw().tolist()) if c != 0]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        c = self.draw()
        loss = closure_loss(closure)
        self._pending = None
        self.state["step_scales"] = c.clone()
        for j, cj in enumerate(c.tolist()):
            if cj == 0:
                continue
            for group, p in self.blocks[j]:
                if p.grad is None:
                    raise ValueError(f"{type(self).__name__}: active block {j} has no gradient")
                p.add_(p.grad, alpha=-group["lr"] * cj)
        return loss

    def _extra_state(self):
        return {"pending": None if self._pending is None else self._pending.clone()}

    def _load_extra_state(self, extra) -> None:
        pending = extra.get("pending")
        self._pending = None if pending is None else pending.clone()


class RPT(_BlockSketchGD):
    r"""RPT: gradient descent on a random prefix of the blocks, rescaled by ``1/q_j`` (unbiased).

    Each step samples ``s`` with ``P(s = j) = p_j`` and moves blocks ``1..s`` by
    ``-lr g_j / q_j`` with ``q_j = p_j + ... + p_B`` (see the module docstring for the stepsize).
    ``probs = (0, ..., 0, 1)`` is gradient descent.

    Args:
        params: parameters or param groups; the blocks are the groups in order when there are
            several, else the parameters in order (first = the layer nearest the input).
        lr: stepsize ``gamma``.
        probs: ``p_1..p_B`` over prefix lengths (default uniform); ``p_B > 0`` is needed for the
            last block to move at all, and every ``q_j > 0``.
        generator / seed: the random prefix lengths (the generator's state is saved in
            ``state_dict``).

    Reference: Szlendak, Gasanov, Richtárik (2023), arXiv:2306.03626 (RPT).
    """

    def __init__(self, params, lr: float, probs: Sequence[float] | None = None,
                 generator: torch.Generator | None = None, seed: int = 0):
        super().__init__(params, lr, generator, seed)
        p = _check_probs(probs, self.num_blocks, "RPT")
        self.probs = torch.tensor(p, dtype=torch.float64) / sum(p)
        self.q = prefix_inclusion(self.probs)
        if not bool((self.q > 0).all()):
            raise ValueError("RPT: the last block is never trained (p_B = 0 makes q_B = 0); give p_B > 0")

    def _scales(self) -> Tensor:
        return rpt_scales(self.probs, 1, self.generator)[0]

    def second_moment(self, sizes: Sequence[int]) -> Tensor:
        """``E[c c^T]`` over coordinates, blocks of the given sizes."""
        return rpt_sketch_second_moment(self.q, sizes)

    def expected_cost(self, block_costs: Sequence[float]) -> float:
        """``sum_j q_j cost_j``: the expected cost of a step when block ``j``'s gradient costs ``cost_j``."""
        return float((self.q * torch.as_tensor(block_costs, dtype=torch.float64)).sum())


class RCD(_BlockSketchGD):
    r"""Randomized block coordinate descent with the unbiased ``1/p_j`` rescaling.

    ``sampling="single"``: one block ``j`` with probability ``p_j`` (default uniform) moves by
    ``-lr g_j / p_j``; ``"independent"``: each block with probability ``p_j`` (default 1/2),
    independently, by ``-lr g_j / p_j``.

    Reference: Szlendak, Gasanov, Richtárik (2023), arXiv:2306.03626 (the RCD analysis);
    Richtárik & Takáč (2014), "Iteration complexity of randomized block-coordinate descent
    methods", arXiv:1107.2848.
    """

    def __init__(self, params, lr: float, probs: Sequence[float] | None = None, sampling: str = "single",
                 generator: torch.Generator | None = None, seed: int = 0):
        super().__init__(params, lr, generator, seed)
        if sampling not in ("single", "independent"):
            raise ValueError(f"RCD: sampling must be 'single' or 'independent', got {sampling!r}")
        B = self.num_blocks
        p = _check_probs(probs if probs is not None or sampling == "single" else [0.5] * B, B, "RCD")
        self.sampling = sampling
        self.probs = torch.tensor(p, dtype=torch.float64)
        if sampling == "single":
            self.probs = self.probs / self.probs.sum()
        if not bool((self.probs > 0).all()) or (sampling == "independent" and bool((self.probs > 1).any())):
            raise ValueError("RCD: every block needs a probability in (0, 1]")

    def _scales(self) -> Tensor:
        return rcd_scales(self.probs, 1, self.sampling, self.generator)[0]

    def second_moment(self, sizes: Sequence[int]) -> Tensor:
        """``E[c c^T]`` over coordinates, blocks of the given sizes."""
        b = torch.repeat_interleave(torch.arange(self.num_blocks), torch.as_tensor(list(sizes)))
        p = self.probs[b]
        same = b[:, None] == b[None, :]
        if self.sampling == "single":
            return torch.where(same, 1.0 / p[:, None], torch.zeros(()))
        return torch.where(same, 1.0 / p[:, None], torch.ones(()).double())
