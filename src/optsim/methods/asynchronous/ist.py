"""Independent Subnetwork Training (IST): model parallelism by submodels, on quadratics.

Shulgin, Richtárik (2023), "Towards a better theoretical understanding of independent subnetwork
training", arXiv 2306.16484. Each round the server cuts the model into submodels with random
sketches C_1^k, ..., C_n^k (symmetric PSD d x d matrices), client i trains its submodel
w_i = C_i x with local gradient steps that stay in the submodel's subspace,
z <- z - gamma C_i grad f_i(z), and the server reassembles the model. With one local step the
method is the SGD-type update (eq. 2 and 5 of the paper)

    x^{k+1} = x^k - gamma g^k,   g^k = (1/n) sum_i C_i^k grad f_i(C_i^k x^k),

whose gradient estimator is *biased* (the gradient is taken at the sparse submodel, not at x):
for the quadratics f_i(x) = 1/2 x^T L_i x - b_i^T x of the paper (eq. 12),
g^k = Bbar^k x^k - (1/n) sum_i C_i^k b_i with Bbar^k = (1/n) sum_i C_i^k L_i C_i^k (eq. 13, 26).
Because the sketches are drawn afresh each round, the mean of the iterates follows exactly

    E x^{k+1} = (I - gamma E[Bbar]) E x^k + gamma E[(1/n) sum_i C_i b_i],

so E x^k converges to x_inf = E[Bbar]^{-1} E[(1/n) sum_i C_i b_i], which is x* = Lbar^{-1} bbar only
in special cases: the interpolation case b_i = 0 (Sec. 3) or, for homogeneous data, when the
(preconditioned) linear term is an eigenvector of Lbar^{-1} with eigenvalue 1/sqrt(n) (Sec. 4.2).
In the heterogeneous case the iterates also fluctuate around x_inf with a variance proportional to
the stepsize (Theorem 2's sigma^2 term); the bias h = x* - x_inf does not shrink with gamma (Sec. 4.1).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import PositiveInt

from ..base import Method, MethodParams, register_method

__all__ = ["IST", "ISTParams"]


class ISTParams(MethodParams):
    #: the submodel sketch: "perm" (Perm-q, Def. 2: C_i = n sum_{j in block i} e_j e_j^T of a random
    #: permutation cut into n blocks of q = d/n coordinates; when n does not divide d the blocks
    #: differ by one coordinate, ours), "perm_precond" (the heterogeneous
    #: sketch preconditioning of eq. 23 with d = n: C_i = sqrt(n) [L_i]_{jj}^{-1/2} e_j e_j^T for the
    #: coordinate j = pi_i client i gets) or "identity" (C_i = I: distributed gradient descent)
    sketch: Literal["perm", "perm_precond", "identity"] = "perm"
    #: local gradient steps on the submodel (the paper's analysis: 1)
    local_steps: PositiveInt = 1


@register_method
class IST(Method):
    """Independent Subnetwork Training / Distributed Submodel Gradient Descent (module docstring).

    Shulgin, Richtárik (2023), "Towards a better theoretical understanding of independent
    subnetwork training", arXiv 2306.16484, Algorithm 1 with exact local gradients. Round k: the
    server draws one random permutation, client i receives its block of q = d/n coordinates
    (q floats and their indices down), takes ``local_steps`` steps z <- z - gamma C_i grad f_i(z)
    from w_i = C_i x, and sends its block of z - w_i (q floats up; the server knows the blocks);
    the server sets x <- x + (1/n) sum_i (z_i - w_i). For "perm" and "identity", (1/n) sum_i C_i = I
    and this is Algorithm 1's x^{k+1} = (1/n) sum_i z_i; with one local step it is the update
    x^{k+1} = x^k - gamma g^k (eq. 2 with estimator 5) that the theorems analyse, for every sketch.

    Default stepsize gamma = 1/theta with theta the smallest constant in Theorem 1's condition
    (14), E[Bbar Lbar Bbar] <= theta Wbar, Wbar = (E[Bbar] Lbar + Lbar E[Bbar]) / 2, computed
    exactly for the problem: "identity" gives theta = lambda_max(Lbar) (gradient descent,
    Sec. 3.1 example 1), "perm_precond" theta = 1 (Bbar = I, Sec. 3.1.2, eq. 25: one step solves the
    interpolation case), "perm" with d = n (Perm-1) the generalized eigenvalue of the exact second
    moment (refused when Wbar is not positive definite, Remark 1). Theorem 1 covers b_i = 0 (linear
    convergence of E||x^k - x*||^2_Lbar, eq. 16); with linear terms Theorem 2 (sketch 23) allows
    gamma <= (1/2 - beta)/(1/2 + beta) and bounds a neighbourhood that does not vanish with gamma.
    Theory constants need the quadratic's matrices (:class:`~optsim.problems.Quadratic`); for
    "perm" with d != n the exact fourth moment is not implemented: set ``stepsize``. On other
    problems (not covered by the paper) the default is 1/(n L_max), theta of the permutation sketch
    when every L_i = L_max I (our heuristic).
    """

    name = "ist"
    stepsize_source = "reading"
    state = ("x", "_c", "_q", "_owner")
    paper = "Shulgin, Richtárik (2023), Towards a better theoretical understanding of independent subnetwork training, arXiv 2306.16484, Alg. 1"
    Params = ISTParams

    def check(self):
        sk, n, d = self.params.sketch, self.n, self.d
        if sk not in ("perm", "perm_precond", "identity"):
            raise ValueError(f"ist: sketch must be 'perm', 'perm_precond' or 'identity', got '{sk}'")
        if sk == "perm_precond":
            if d != n:
                raise ValueError(f"ist: the preconditioned sketch (eq. 23) is Perm-1: it needs d = n, got d = {d}, n = {n}")
            if self.problem.quadratic_data is None:
                raise ValueError("ist: the preconditioned sketch needs the diagonals of the clients' matrices L_i "
                                 f"(a quadratic problem), got {self.problem.name}")

    # ---- the sketches ---------------------------------------------------------------------------
    def _diag(self) -> torch.Tensor:
        """(n, d): the diagonals of the clients' matrices L_i."""
        return torch.diagonal(self.problem.quadratic_data[0].to(torch.float64), dim1=1, dim2=2)

    def _scales(self) -> torch.Tensor:
        """(n, d) diagonal of C_i on client i's block, for every coordinate (the block mask applies)."""
        n = self.n
        if self.params.sketch == "perm":
            return torch.full((n, self.d), float(n), dtype=torch.float64)
        return math.sqrt(n) * self._diag().rsqrt()

    def sketch_moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact E[Bbar], E[Bbar Lbar Bbar] and E[(1/n) sum_i C_i b_i] over the random sketch, for a
        quadratic problem (float64)."""
        p = self.problem
        if p.quadratic_data is None:
            raise NotImplementedError(f"ist: theory constants need a quadratic problem, got {p.name}: set 'stepsize'")
        L = p.quadratic_data[0].to(torch.float64)
        b = p.quadratic_data[1].to(torch.float64)
        Lbar, bbar = L.mean(0), b.mean(0)
        n, d, sk = self.n, self.d, self.params.sketch
        if sk == "identity":
            return Lbar, Lbar @ Lbar @ Lbar, bbar
        if sk == "perm" and d != n:
            raise NotImplementedError(f"ist: Theorem 1's constant for the permutation sketch with d = {d} != n = {n} "
                                      "is not implemented (only Perm-1, d = n): set 'stepsize'")
        # Perm-1: coordinate j goes to client sigma(j), sigma a uniformly random bijection, and
        # Bbar = diag(v), v_j = c_{sigma(j), j}^2 [L_{sigma(j)}]_jj / n with c the sketch's scale
        c = self._scales()  # (n, d)
        V = c.pow(2) * torch.diagonal(L, dim1=1, dim2=2) / n  # V[i, j]: v_j if client i gets j
        Ev = V.mean(0)
        s = V.sum(0)
        EvvT = (torch.outer(s, s) - V.T @ V) / (n * (n - 1)) if n > 1 else torch.zeros(d, d, dtype=torch.float64)
        EvvT.diagonal().copy_(V.pow(2).mean(0))
        EB = torch.diag(Ev)
        EBLB = Lbar * EvvT
        ECb = (c * b).mean(0) / n  # (1/n) sum_i E[C_i] b_i, E[C_i] = diag(c_i) / n
        return EB, EBLB, ECb

    def theta(self) -> float:
        """The smallest theta with E[Bbar Lbar Bbar] <= theta Wbar (Theorem 1, condition 14)."""
        EB, EBLB, _ = self.sketch_moments()
        Lbar = self.problem.quadratic_data[0].to(torch.float64).mean(0)
        W = 0.5 * (EB @ Lbar + Lbar @ EB)
        ev, U = torch.linalg.eigh(W)
        if float(ev.min()) <= 1e-12 * float(ev.abs().max()):
            raise ValueError("ist: Wbar = (E[Bbar] Lbar + Lbar E[Bbar]) / 2 is not positive definite, so condition (14) "
                             "of Theorem 1 cannot hold (Remark 1): use sketch 'perm_precond' or set 'stepsize'")
        Wih = U @ torch.diag(ev.rsqrt()) @ U.T
        M = Wih @ EBLB @ Wih
        return float(torch.linalg.eigvalsh(0.5 * (M + M.T))[-1])

    def theory_stepsize(self):
        if self.problem.quadratic_data is None:  # the paper's theory is for quadratics
            if self.params.sketch == "identity":
                return 1.0 / self.problem.L
            return 1.0 / (self.n * self.problem.L_max)  # theta of Perm-q when every L_i = L_max I (heuristic, ours)
        return 1.0 / self.theta()

    def expected_fixed_point(self) -> torch.Tensor:
        """x_inf = E[Bbar]^{-1} E[(1/n) sum_i C_i b_i]: the limit of E x^k (module docstring, Sec. 4.1)."""
        EB, _, ECb = self.sketch_moments()
        return torch.linalg.solve(EB, ECb)

    # ---- the round ------------------------------------------------------------------------------
    def init(self, x0):
        self.x = x0
        if self.params.sketch != "identity":
            self._c = self._scales().to(x0)
            self._q = torch.tensor([len(range(i, self.d, self.n)) for i in range(self.n)], dtype=torch.float64)  # block sizes
            self._owner = (torch.arange(self.d) % self.n).to(x0.device)  # position j of the permutation -> client

    def _sketch(self) -> torch.Tensor:
        """(n, d): row i is the diagonal of C_i^k (zero outside client i's block: the coordinates
        pi_j of a fresh random permutation pi with j = i mod n)."""
        perm = torch.randperm(self.d, generator=self.ctx.generator("method")).to(self.x.device)
        rows = self._owner
        C = torch.zeros(self.n, self.d, dtype=self.x.dtype, device=self.x.device)
        C[rows, perm] = self._c[rows, perm]
        return C

    def step(self):
        gamma, H = self.gamma, self.params.local_steps
        if self.params.sketch == "identity":
            W = self.channel.broadcast(self.x).expand(self.n, self.d)
            C = None
        else:
            C = self._sketch()
            W = self.channel.send_down(self.channel.sparse(C * self.x, self._q))  # the submodels C_i x
        if H == 1:  # eq. 2 with estimator 5: x - gamma (1/n) sum_i C_i grad f_i(C_i x)
            G = self.problem.grads(W)
            g = self.channel.uplink(G if C is None else self.channel.sparse(C * G, self._q, indexed=False))
            self.x = self.x - gamma * g
            return
        Z = W
        for _ in range(H):  # local steps in the submodel's subspace
            G = self.problem.grads(Z)
            Z = Z - gamma * (G if C is None else C * G)
        D = Z - W
        self.x = self.x + self.channel.uplink(D if C is None else self.channel.sparse(D, self._q, indexed=False))
