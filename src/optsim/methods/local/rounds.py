"""FedAvg-type local training: one round = the participants' local steps, then one aggregation.

FedAvg / Local SGD, FedProx, Scaffold and FedNova on the shared machinery of
:class:`LocalTraining` (participants, local steps as batched oracle calls, aggregation weights).
Each local step of all participants is one batched oracle call (``_run_local``). Constants used by
the theory defaults are properties of the problem (``L_max``, ``local_mu``, ``L_sample_max``).
"""
from __future__ import annotations

from functools import cached_property
from typing import Literal

import torch
from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from ...problems import Problem, Reshuffler
from ...sampling import Independent
from ..base import Method, MethodParams, register_method

__all__ = ["DEFAULT_LOCAL_STEPS", "mu_min_of", "LocalParams", "LocalTraining", "FedAvgParams", "FedAvg", "LocalSGD", "FedProxParams", "FedProx", "ScaffoldParams", "Scaffold", "FedNova"]


#: local steps per round when neither ``local_steps`` nor ``local_epochs`` is given (a
#: conventional choice: FedAvg's and Scaffold's theorems hold for any K)
DEFAULT_LOCAL_STEPS = 10


def mu_min_of(problem: Problem, who: str, fix: str = "set p explicitly") -> float:
    """min_i mu_i (``problem.local_mu``), refused (naming ``who`` and the ``fix``) when some f_i is not
    strongly convex."""
    mu = float(problem.local_mu.min())
    if mu <= 0:
        raise ValueError(f"{who}: some client's f_i is not strongly convex (mu_i = 0); {fix}")
    return mu


# ---- FedAvg-type methods: a round of local steps ---------------------------------------------------
class LocalParams(MethodParams):
    #: local steps per round: one number, or one per client (heterogeneous tau_i); default 10
    local_steps: PositiveInt | list[PositiveInt] | None = None
    #: local epochs per round instead of steps (needs batch_size): tau_i = E * floor(m_i / b)
    #: steps over a fresh random permutation of the client's samples each epoch
    local_epochs: PositiveInt | None = None
    #: samples per local step; None: full local gradients. Without local_epochs the samples are
    #: drawn uniformly with replacement
    batch_size: PositiveInt | None = None
    #: server stepsize eta_g: x+ = x + eta_g * (aggregated client update)
    server_stepsize: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if self.local_steps is not None and self.local_epochs is not None:
            raise ValueError("give local_steps or local_epochs, not both")
        if self.local_epochs is not None and self.batch_size is None:
            raise ValueError("local_epochs needs a batch_size (samples per local step)")
        return self


class LocalTraining(Method):
    """Shared machinery of the FedAvg-type methods: participants, local steps, aggregation."""

    uses = ("sampler",)
    Params = LocalParams

    def check(self):
        pr, prm = self.problem, self.params
        steps = getattr(prm, "local_steps", None)
        if isinstance(steps, list) and len(steps) != self.n:
            raise ValueError(f"{self.name}: local_steps lists {len(steps)} values for {self.n} clients")
        if self.epochs:
            if not pr.has_sample_grads:
                raise ValueError(f"{self.name}: local epochs need a finite-sum problem with per-sample gradients, "
                                 f"got {pr.name}")
            if prm.batch_size > int(pr.m.min()):
                raise ValueError(f"{self.name}: batch_size {prm.batch_size} exceeds the smallest client's "
                                 f"{int(pr.m.min())} samples")

    @property
    def epochs(self) -> int | None:
        return getattr(self.params, "local_epochs", None)

    @cached_property
    def tau(self) -> torch.Tensor:
        """(n,) local steps of each client per round."""
        if self.epochs:
            return self.epochs * (self.problem.m.cpu() // self.params.batch_size)
        steps = getattr(self.params, "local_steps", None)
        if steps is None:
            steps = DEFAULT_LOCAL_STEPS
        return torch.as_tensor(steps, dtype=torch.long).expand(self.n).clone()

    @property
    def K(self) -> int:
        """The largest number of local steps of a client in a round."""
        return int(self.tau.max())

    @property
    def step_smoothness(self) -> float:
        """Smoothness of the functions a local step differentiates: L_max (full local gradients)
        or the per-sample L_s (sampled batches)."""
        return self.problem.L_max if self.params.batch_size is None else max(self.problem.L_sample_max,
                                                                             self.problem.L_max)

    # participants and aggregation
    def participants(self) -> torch.Tensor | None:
        """This round's clients (None: all of them)."""
        if self.sampler is None or self.sampler.is_full:
            return None
        return self.sample_clients()

    def weights(self, S) -> torch.Tensor | None:
        """Aggregation weights of the participants' updates: the mean over S for full, nice and
        cyclic sampling (unbiased for the uniform objective), 1 / (n p_i) for independent sampling."""
        if S is None or not isinstance(self.sampler, Independent):
            return None
        p = self.sampler.probs[S].to(self.problem.dtype)
        return (1.0 / (self.n * p)).to(self.problem.device)

    def _expected_participants(self) -> float:
        return float(self.n if self.sampler is None else self.sampler.probs.sum())

    # local steps
    def _grad(self, Y: torch.Tensor, clients, idx) -> torch.Tensor:
        """The local step's gradient at rows Y of ``clients`` (None = all)."""
        b = self.params.batch_size
        if self.epochs:
            return self.problem.sample_grads(Y, idx, clients)
        if b is None:
            return self.problem.grads(Y, clients)
        return self.problem.minibatch_grads(Y, b, self.ctx.generator("noise"), clients)

    def _run_local(self, Y: torch.Tensor, S, lr, direction=None) -> torch.Tensor:
        """Each participant's tau_i local steps, in place on its row of Y (rows in the order of S).

        ``lr``: a number or an (|S|, 1) tensor of per-client stepsizes. ``direction(G, rows)``
        (optional) turns the gradient rows G of the still-active participants ``rows`` (None =
        all) into the step direction. One batched oracle call per local step.
        """
        tau = self.tau if S is None else self.tau[S]
        K = int(tau.max())
        uniform = bool((tau == K).all())
        shuffler = Reshuffler(self.problem, self.params.batch_size, self.ctx.generator("noise")) if self.epochs else None
        Sd = None if S is None else S.to(self.problem.device)
        per_client = torch.is_tensor(lr)
        changes = set(tau.tolist())  # the active set (tau_i > k) changes only when k reaches some tau_i
        for k in range(K):
            idx = None if shuffler is None else shuffler.next()
            if uniform:
                idx = idx if idx is None or Sd is None else idx[Sd]
                G = self._grad(Y, S, idx)
                if direction is not None:
                    G = direction(G, None)
                G.mul_(lr)  # in place: the oracle's buffer, not a copy
                Y.sub_(G)
                continue
            if k == 0 or k in changes:
                rows = torch.nonzero(tau > k).squeeze(1)
                clients = rows if S is None else S[rows]
                clients_d, rows_d = clients.to(Y.device), rows.to(Y.device)
                lr_rows = lr[rows_d] if per_client else lr
            Yr = Y[rows_d]
            G = self._grad(Yr, clients, None if idx is None else idx[clients_d])
            if direction is not None:
                G = direction(G, rows_d)
            Y[rows_d] = Yr - lr_rows * G
        return Y

    def init(self, x0):
        self.x = x0

    def _start(self):
        """Sample the participants and send them the model: (S, x as received, |S|)."""
        S = self.participants()
        x = self.channel.broadcast(self.x, clients=S)
        return S, x, (self.n if S is None else S.shape[0])


class FedAvgParams(LocalParams):
    #: B of the (G, B)-bounded gradient dissimilarity in the stepsize of Karimireddy et al.'s
    #: Thm. I (B >= 1; B = 1 is the homogeneous-like, largest-stepsize case)
    dissimilarity_B: float = Field(1.0, ge=1.0)


@register_method
class FedAvg(LocalTraining):
    """FedAvg / Local SGD: McMahan, Moore, Ramage, Hampson, Agüera y Arcas (2017),
    "Communication-efficient learning of deep networks from decentralized data" (arXiv
    1602.05629), Algorithm 1 (FederatedAveraging), in the two-stepsize form of Karimireddy et al.
    (2020, SCAFFOLD, Alg. 1 without control variates). Each round the sampled clients S receive x,
    run tau_i local steps y <- y - eta_l g_i(y) (full local gradients, or minibatches / reshuffled
    epochs), send Delta_i = y_i - x, and the server sets x <- x + eta_g * mean_{i in S} Delta_i
    (weights 1/(n p_i) for independent sampling). Bits: d floats down and d floats up per participant.

    Default client stepsize eta_l = 1 / (8 (1 + B^2) L_max K eta_g) with K the largest local step
    count and B = 1 (``dissimilarity_B``): Karimireddy et al. (2020), "SCAFFOLD: stochastic
    controlled averaging for federated learning" (arXiv 1910.06378), Thm. I (FedAvg, strongly
    convex case). The constant is taken from that theorem as we read it (not re-verified against
    the text). With heterogeneous data FedAvg converges to a neighbourhood of x* only.
    """

    name = "fedavg"
    stepsize_source = "reading"
    paper = ("McMahan et al. (2017), Communication-efficient learning of deep networks from decentralized data, "
             "Alg. 1; stepsize: Karimireddy et al. (2020), SCAFFOLD, Thm. I")
    Params = FedAvgParams

    def theory_stepsize(self):
        B = getattr(self.params, "dissimilarity_B", 1.0)
        return 1.0 / (8.0 * (1.0 + B * B) * self.problem.L_max * self.K * self.params.server_stepsize)

    def step(self):
        S, x, m = self._start()
        Y = self._run_local(x.expand(m, self.d).clone(), S, self.gamma)
        update = self.channel.uplink(Y - x, clients=S, weights=self.weights(S))
        self.x = self.x + self.params.server_stepsize * update


@register_method
class LocalSGD(FedAvg):
    """Local SGD (Stich (2019), "Local SGD converges fast and communicates little", arXiv
    1805.09767): FedAvg with server stepsize 1 (the same class; ``server_stepsize`` stays
    available). Same default stepsize as :class:`FedAvg`."""

    name = "local_sgd"
    stepsize_source = "reading"
    paper = "Stich (2019), Local SGD converges fast and communicates little (= FedAvg with eta_g = 1)"


class FedProxParams(LocalParams):
    #: weight mu of the proximal term (mu/2)||w - x||^2; default L_max (our heuristic, see the class)
    mu: NonNegativeFloat | None = None


@register_method
class FedProx(LocalTraining):
    """FedProx: Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith (2020), "Federated optimization in
    heterogeneous networks" (arXiv 1812.06127), Algorithm 2. Each sampled client approximately
    minimizes h_i(w) = f_i(w) + (mu/2) ||w - x||^2 started from w = x by tau_i inner gradient
    steps w <- w - eta (g_i(w) + mu (w - x)) (the inexact local solver), sends w_i - x, and the
    server averages: x <- x + eta_g * mean_{i in S} (w_i - x) (eta_g = 1 is the paper's update).

    Default inner stepsize eta = 1 / (L_max + mu), the gradient-descent stepsize of the
    (L_max + mu)-smooth, strongly convex subproblem (Nesterov 2004, Thm. 2.1.15). The paper's
    convergence theorem (Thm. 4) needs the dissimilarity constant B to pick mu, which cannot be
    computed from data; the default mu = L_max is our heuristic (the subproblem then has
    condition number at most 2, so a few inner steps solve it accurately).
    """

    name = "fedprox"
    stepsize_source = "derived"
    paper = "Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith (2020), Federated optimization in heterogeneous networks, Alg. 2"
    Params = FedProxParams

    @property
    def mu(self) -> float:
        return self.problem.L_max if self.params.mu is None else float(self.params.mu)

    def theory_stepsize(self):
        return 1.0 / (self.step_smoothness + self.mu)

    def step(self):
        S, x, m = self._start()
        mu = self.mu

        def prox_term(G, rows):
            Yr = Y if rows is None else Y[rows]
            return G + mu * (Yr - x)

        Y = x.expand(m, self.d).clone()
        self._run_local(Y, S, self.gamma, prox_term)
        update = self.channel.uplink(Y - x, clients=S, weights=self.weights(S))
        self.x = self.x + self.params.server_stepsize * update


class ScaffoldParams(LocalParams):
    #: control-variate update: "I" c_i+ = grad f_i(x) (an extra full local gradient), "II"
    #: c_i+ = c_i - c + (x - y_i) / (tau_i eta_l) (no extra computation)
    option: Literal["I", "II"] = "II"


@register_method
class Scaffold(LocalTraining):
    """SCAFFOLD: Karimireddy, Kale, Mohri, Reddi, Stich, Suresh (2020), "SCAFFOLD: stochastic
    controlled averaging for federated learning" (arXiv 1910.06378), Algorithm 1.

    Server state x, c; client control variates c_i (all zero at the start). Each round the
    sampled clients receive (x, c) (2d floats down), run tau_i local steps
    y <- y - eta_l (g_i(y) - c_i + c), update c_i+ by option I (grad f_i(x), a full local gradient;
    with full-gradient local steps it is the first step's gradient, so it costs nothing extra) or
    option II (c_i - c + (x - y_i) / (tau_i eta_l)), and send (y_i - x, c_i+ - c_i) (2d floats up).
    Server: x <- x + eta_g mean_S (y_i - x), c <- c + (1/n) sum_S (c_i+ - c_i).

    Default client stepsize: Thm. III (strongly convex): eta_l = min(1 / (81 L_max K eta_g),
    S / (15 mu n K eta_g)) with S the expected number of participants and K the largest local step
    count (constants as we read the theorem, not re-verified). With full participation and full
    local gradients the fixed point is exact (c_i = grad f_i(x*)), unlike FedAvg.
    """

    name = "scaffold"
    stepsize_source = "reading"
    paper = "Karimireddy et al. (2020), SCAFFOLD: stochastic controlled averaging for federated learning, Alg. 1, Thm. III"
    Params = ScaffoldParams
    state = ("x", "c", "C")

    def theory_stepsize(self):
        eta_g, K = self.params.server_stepsize, self.K
        g = 1.0 / (81.0 * self.problem.L_max * K * eta_g)
        if self.problem.mu:
            g = min(g, self._expected_participants() / (15.0 * self.problem.mu * self.n * K * eta_g))
        return g

    def init(self, x0):
        self.x = x0
        self.c = torch.zeros_like(x0)
        self.C = self.zeros_clients()

    def step(self):
        S, x, m = self._start()
        c = self.channel.broadcast(self.c, clients=S)
        Ci = self.C if S is None else self.C[S.to(self.C.device)]
        shift = c - Ci
        first = {}
        reuse = self.params.option == "I" and self.params.batch_size is None

        def corrected(G, rows):
            if reuse and "g" not in first:  # the first local step is at y = x: grad f_i(x)
                first["g"] = G.clone()
            return G + (shift if rows is None else shift[rows])

        Y = self._run_local(x.expand(m, self.d).clone(), S, self.gamma, corrected)
        if self.params.option == "I":
            C_new = first["g"] if reuse else self.problem.grads(x.expand(m, self.d), S)
        else:
            tau = (self.tau if S is None else self.tau[S]).to(x.device, x.dtype)[:, None]
            C_new = Ci - c + (x - Y) / (tau * self.gamma)
        update = self.channel.uplink(Y - x, clients=S, weights=self.weights(S))
        dc = self.channel.uplink(C_new - Ci, clients=S, weights=1.0 / self.n)
        if S is None:
            self.C = C_new
        else:
            self.C[S.to(self.C.device)] = C_new
        self.x = self.x + self.params.server_stepsize * update
        self.c = self.c + dc


@register_method
class FedNova(LocalTraining):
    """FedNova: Wang, Liu, Liang, Joshi, Poor (2020), "Tackling the objective inconsistency problem
    in heterogeneous federated optimization" (arXiv 2007.07481), the normalized averaging update
    with vanilla local SGD (a_i = (1, ..., 1), ||a_i||_1 = tau_i): client i runs tau_i local steps
    (``local_steps`` as a list, or ``local_epochs``, giving tau_i = E floor(m_i / b)), sends the
    normalized update d_i = (y_i - x) / tau_i, and the server steps
    x <- x + eta_g tau_eff sum_{i in S} w_i d_i with tau_eff = (1/n) sum_i tau_i over all clients
    (the objective's weights 1/n; w_i the aggregation weights of the sampler). With equal tau_i it
    is FedAvg. Default stepsize: FedAvg's (Karimireddy et al. Thm. I with B = 1 and K = max tau_i);
    FedNova's own theorem (nonconvex) ties the stepsize to the horizon and gives no constant default.
    """

    name = "fednova"
    stepsize_source = "reading"
    paper = ("Wang, Liu, Liang, Joshi, Poor (2020), Tackling the objective inconsistency problem in heterogeneous "
             "federated optimization (FedNova normalized averaging)")

    def theory_stepsize(self):
        return 1.0 / (16.0 * self.problem.L_max * self.K * self.params.server_stepsize)

    def step(self):
        S, x, m = self._start()
        Y = self._run_local(x.expand(m, self.d).clone(), S, self.gamma)
        tau = (self.tau if S is None else self.tau[S]).to(x.device, x.dtype)[:, None]
        d = self.channel.uplink((Y - x) / tau, clients=S, weights=self.weights(S))
        tau_eff = float(self.tau.to(torch.float64).mean())
        self.x = self.x + self.params.server_stepsize * tau_eff * d
