"""Local training, client sampling and reshuffling (PAPERS.md, family L and its baselines).

Two kinds of rounds live here, and the trace tells them apart by its columns ``comm_rounds``
(rounds in which bits moved) and ``grad_evals`` (local gradient computations, per client):

* **FedAvg-type** methods (FedAvg / Local SGD, FedProx, Scaffold, FedNova, FedRR, FedShuffle,
  FedShuffle-MVR): one ``step()`` is one communication round made of the clients' local steps;
  each local step of all participants is one batched oracle call (``_run_local``).
* **ProxSkip-type** methods (ProxSkip / Scaffnew, ProxSkip-VR, GradSkip, GradSkip+): one
  ``step()`` is one iteration, a local step of every client; a shared coin decides whether the
  iteration ends with communication. Iterations without communication send nothing through the
  channel, so the meter does not count them as communication rounds. Their ``x`` (what the
  metrics evaluate) is the mean of the clients' local models, a diagnostic that is not sent.

Regularized (cyclic) participation (L9) is the ``cyclic`` client sampler of :mod:`optsim.sampling`.

Constants used by the theory defaults, all properties of the problem: ``L_max`` (largest local
smoothness), the smallest local strong convexity ``mu_min`` = min_i mu_i (``problem.local_mu``;
the ProxSkip/GradSkip analyses assume every f_i is mu-strongly convex) and the largest per-sample
smoothness ``L_s`` = max_ij L_ij (``problem.L_sample_max``) for methods that step on sampled data.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ..estimators import svrg
from ..problems import Problem, Reshuffler
from ..sampling import Independent
from .base import Method, MethodParams, register_method

__all__ = ["FedAvg", "LocalSGD", "FedProx", "Scaffold", "FedNova", "FedRR", "FedShuffle",
           "FedShuffleMVR", "ProxSkip", "ProxSkipVR", "GradSkip", "GradSkipPlus",
           "gradskip_probabilities", "gradskip_stepsize", "mu_min_of"]

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


def _draw(m: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """(len(m), b) local sample indices, uniform with replacement in [0, m_i) (CPU)."""
    u = torch.rand(m.shape[0], b, generator=generator, dtype=torch.float64)
    return (u * m.to(torch.float64)[:, None]).long().clamp_max_(m[:, None] - 1)


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
                Y.sub_(lr * G)
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


class FedRRParams(LocalParams):
    local_epochs: PositiveInt | None = 1
    batch_size: PositiveInt | None = 1


@register_method
class FedRR(FedAvg):
    """Federated random reshuffling: Mishchenko, Khaled, Richtárik (2022), "Proximal and federated
    random reshuffling" (arXiv 2102.06704), FedRR: every round each client runs one epoch (default)
    over a fresh random permutation of its samples, ``batch_size`` (default 1) at a time, with
    stepsize gamma (via :class:`~optsim.problems.Reshuffler`), and the server averages the local
    models (FedAvg with ``local_epochs`` and eta_g = 1).

    Default stepsize gamma = 1 / L_s, L_s = max_ij L_ij the largest per-sample smoothness
    constant (ProxRR / FedRR theorems for strongly convex problems require gamma <= 1/L_max over
    the sample functions; theorem number not re-verified). FedRR converges linearly to a
    neighbourhood of x* whose squared radius scales like gamma^2.
    """

    name = "fedrr"
    paper = "Mishchenko, Khaled, Richtárik (2022), Proximal and federated random reshuffling, FedRR"
    Params = FedRRParams

    def theory_stepsize(self):
        return 1.0 / self.problem.L_sample_max


class FedShuffleParams(MethodParams):
    #: local epochs E per round (each a fresh permutation of the client's samples)
    local_epochs: PositiveInt = 1
    #: samples per local step
    batch_size: PositiveInt = 1
    server_stepsize: PositiveFloat = 1.0


@register_method
class FedShuffle(LocalTraining):
    """FedShuffle: Horváth, Sanjabi, Xiao, Richtárik, Morcos (2022), "FedShuffle: recipes for
    better use of local work in federated learning" (arXiv 2204.13169).

    Each sampled client runs E epochs of random reshuffling over its m_i samples (tau_i =
    E floor(m_i / b) steps) with its stepsize scaled by tau_max / tau_i, eta_i = eta tau_max / tau_i,
    so every client's local work adds up to the same total stepsize whatever its data size; the
    server aggregates x <- x + eta_g sum_{i in S} (w_i / p_i) (y_i - x) with the objective's weights
    w_i = 1/n (the mean over S for nice sampling). FedAvg with local epochs instead moves client i
    by about tau_i eta grad f_i and so minimizes sum_i tau_i f_i, not f (objective inconsistency).
    The stepsize scaling and aggregation follow the authors' public code (lr / (tau_i / tau_max)).

    Default eta (the stepsize of the client with the most steps): 1 / (16 L tau_max) with L the
    largest per-sample smoothness, i.e. eta_i tau_i <= 1/(16 L) as FedAvg's theorem (Karimireddy
    et al. Thm. I, B = 1) allows for a round's total local stepsize; FedShuffle's own theorem's
    constants could not be confirmed.
    """

    name = "fedshuffle"
    paper = ("Horváth, Sanjabi, Xiao, Richtárik, Morcos (2022), FedShuffle: recipes for better use of local work "
             "in federated learning")
    Params = FedShuffleParams

    def theory_stepsize(self):
        return 1.0 / (16.0 * self.step_smoothness * self.K * self.params.server_stepsize)

    @cached_property
    def client_stepsizes(self) -> torch.Tensor:
        """(n, 1) local stepsizes eta tau_max / tau_i."""
        scale = float(self.tau.max()) / self.tau.to(torch.float64)
        return (self.gamma * scale).to(self.problem.device, self.problem.dtype)[:, None]

    def step(self):
        S, x, m = self._start()
        lr = self.client_stepsizes if S is None else self.client_stepsizes[S.to(x.device)]
        Y = self._run_local(x.expand(m, self.d).clone(), S, lr)
        update = self.channel.uplink(Y - x, clients=S, weights=self.weights(S))
        self.x = self.x + self.params.server_stepsize * update


class FedShuffleMVRParams(FedShuffleParams):
    #: momentum parameter a of the MVR estimator (a = 1: plain FedShuffle); default 0.1 (heuristic)
    momentum: float = Field(0.1, gt=0, le=1)


@register_method
class FedShuffleMVR(FedShuffle):
    """FedShuffle with momentum variance reduction (FedShuffleMVR), after Horváth et al. (2022),
    "FedShuffle" (arXiv 2204.13169), which combines FedShuffle's local reshuffled epochs with the
    MVR (STORM) estimator of Cutkosky & Orabona (2019) used as in MimeMVR (Karimireddy et al. 2020,
    "Mime"). The exact update of the paper's FedShuffleMVR could not be read (only its abstract
    was accessible); this implementation is our rendering of that combination:

    * server state: model x, previous model x_prev, momentum m (m^0 = grad f(x^0), all clients);
    * each round the participants receive x, x_prev and m (3d floats down) and compute
      v_i = grad f_i(x) - (1 - a) grad f_i(x_prev) (two full local gradients);
    * local steps are FedShuffle's (scaled stepsizes, reshuffled batches B) along the MVR
      direction a g_B(y) + (1 - a) (m + g_B(y) - g_B(x)) (the same batch at y and at x);
    * they send y_i - x and v_i (2d floats up); the server sets x_prev <- x,
      x <- x + eta_g agg(y_i - x), m <- agg(v_i) + (1 - a) m
      (= a g(x) + (1 - a)(m + g(x) - g(x_prev)), the STORM update with the participants' gradients).

    With a = 1 the iterates are exactly FedShuffle's. Default a = 0.1 (heuristic, unconfirmed).
    """

    name = "fedshuffle_mvr"
    paper = ("Horváth, Sanjabi, Xiao, Richtárik, Morcos (2022), FedShuffle (FedShuffleMVR); MVR as in MimeMVR "
             "(Karimireddy et al. 2020) -- our rendering, see docstring")
    Params = FedShuffleMVRParams
    state = ("x", "x_prev", "m", "_m_round", "_x_round")

    def init(self, x0):
        self.x = x0
        self.x_prev = x0.clone()
        self.m = self.channel.uplink(self.problem.grads(x0.expand(self.n, self.d)))

    def _grad(self, Y, clients, idx):
        a, k = self.params.momentum, Y.shape[0]
        rows = torch.arange(self.n) if clients is None else torch.as_tensor(clients)
        both = self.problem.sample_grads(torch.cat([Y, self._x_round.expand(k, self.d)]), torch.cat([idx, idx]),
                                         torch.cat([rows, rows]))
        return both[:k] - (1 - a) * both[k:] + (1 - a) * self._m_round

    def step(self):
        a = self.params.momentum
        S, x, m = self._start()
        self._m_round = self.channel.broadcast(self.m, clients=S)
        xp = self.channel.broadcast(self.x_prev, clients=S)
        self._x_round = x
        ids = torch.arange(self.n) if S is None else S
        Gx = self.problem.grads(torch.cat([x.expand(m, self.d), xp.expand(m, self.d)]), torch.cat([ids, ids]))
        V = Gx[:m] - (1 - a) * Gx[m:]
        lr = self.client_stepsizes if S is None else self.client_stepsizes[S.to(x.device)]
        Y = self._run_local(x.expand(m, self.d).clone(), S, lr)
        w = self.weights(S)
        update = self.channel.uplink(Y - x, clients=S, weights=w)
        v = self.channel.uplink(V, clients=S, weights=w)
        self.x_prev = self.x
        self.x = self.x + self.params.server_stepsize * update
        self.m = v + (1 - a) * self.m


# ---- ProxSkip-type methods: one iteration per step, communication by a shared coin -------------------
class ProxSkipParams(MethodParams):
    #: probability of communicating after a local step; default sqrt(gamma mu_min)
    p: float | None = Field(None, gt=0, le=1)


class _Skip(Method):
    """Shared state of the ProxSkip family: client models X (n, d) and control variates H (n, d)."""

    Params = ProxSkipParams
    state = ("x", "X", "H", "last_comm")

    @cached_property
    def mu_min(self) -> float:
        return mu_min_of(self.problem, self.name)

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, math.sqrt(self.gamma * self.mu_min))

    def init(self, x0):
        self.X = x0.expand(self.n, self.d).clone()
        self.H = self.zeros_clients()  # sum_i h_i = 0, as the theorems require
        self.x = x0
        self.last_comm = False

    def _communicate(self, Xh: torch.Tensor, Hh: torch.Tensor) -> None:
        """The prox step of the consensus constraint: clients send xh_i - (gamma/p) h_i (d floats),
        the server averages and broadcasts (d floats); h_i += (p/gamma) (x_new - xh_i)."""
        g, p = self.gamma, self.p
        avg = self.channel.uplink(Xh - (g / p) * Hh)
        xbar = self.channel.broadcast(avg)
        self.H = Hh + (p / g) * (xbar - Xh)
        self.X = xbar.expand(self.n, self.d).clone()
        self.x = xbar

    def _skip_step(self, G: torch.Tensor) -> None:
        """One iteration of ProxSkip / ProxSkip-VR from the clients' gradient estimates G: local step
        xh_i = x_i - gamma (g_i - h_i), then with probability p the prox (communication) step."""
        Xh = self.X - self.gamma * (G - self.H)
        self.last_comm = self.coin(self.p)
        if self.last_comm:
            self._communicate(Xh, self.H)
        else:
            self.X = Xh
            self.x = Xh.mean(0)

    def lyapunov(self) -> float:
        """Psi = sum_i ||x_i - x*||^2 + (gamma/p)^2 sum_i ||h_i - grad f_i(x*)||^2 (ProxSkip's Thm. 3.6)."""
        xs = self.problem.x_star
        hs = self.problem._grads(xs.expand(self.n, self.d), None)
        return float((self.X - xs).pow(2).sum() + (self.gamma / self.p) ** 2 * (self.H - hs).pow(2).sum())


@register_method
class ProxSkip(_Skip):
    """ProxSkip in its federated form Scaffnew: Mishchenko, Malinovsky, Stich, Richtárik (2022),
    "ProxSkip: yes! Local gradient steps provably lead to communication acceleration! Finally!"
    (arXiv 2202.09357), Algorithm 2. Every iteration each client takes a local step
    xh_i = x_i - gamma (grad f_i(x_i) - h_i); with probability p (one coin for all clients) the
    iteration ends with communication, x_i = mean_j (xh_j - (gamma/p) h_j) and
    h_i <- h_i + (p/gamma)(x_i - xh_i); otherwise x_i = xh_i (nothing is sent).

    Defaults from Thm. 3.6 (E Psi_T <= (1 - min(gamma mu, p^2))^T Psi_0 for gamma <= 1/L) and its
    corollary: gamma = 1/L_max, p = sqrt(gamma mu_min) = 1/sqrt(kappa) (each f_i L_max-smooth and
    mu_min-strongly convex), so O(kappa log 1/eps) local steps and O(sqrt(kappa) log 1/eps)
    communication rounds.
    """

    name = "proxskip"
    paper = ("Mishchenko, Malinovsky, Stich, Richtárik (2022), ProxSkip: yes! Local gradient steps provably lead to "
             "communication acceleration! Finally!, Alg. 2 (Scaffnew), Thm. 3.6")

    def theory_stepsize(self):
        return 1.0 / self.problem.L_max

    def step(self):
        self._skip_step(self.problem.grads(self.X))


class ProxSkipVRParams(ProxSkipParams):
    #: local estimator: "lsvrg" (loopless SVRG) or "saga"
    estimator: Literal["lsvrg", "saga"] = "lsvrg"
    #: samples per local step (drawn uniformly with replacement)
    batch_size: PositiveInt = 1
    #: L-SVRG: probability that a client refreshes its reference point; default max(2 gamma mu, b/m)
    q: float | None = Field(None, gt=0, le=1)


@register_method
class ProxSkipVR(_Skip):
    """ProxSkip-VR: Malinovsky, Yi, Richtárik (2022), "Variance reduced ProxSkip: algorithm,
    theory and application to federated learning" (arXiv 2207.04338): ProxSkip (Scaffnew) with the
    local gradient replaced by a variance-reduced estimator g_i of grad f_i(x_i), f_i = (1/m_i)
    sum_j f_ij:

    * ``lsvrg`` (ProxSkip-LSVRG): g_i = mean_{j in B}(grad f_ij(x_i) - grad f_ij(y_i)) + grad f_i(y_i);
      afterwards, independently per client with probability q, y_i <- x_i (one full local gradient);
    * ``saga`` (ProxSkip-SAGA): g_i = mean_{j in B}(grad f_ij(x_i) - G_ij) + mean_j G_ij, then
      G_ij <- grad f_ij(x_i) for j in B (table initialized at x^0, one full pass).

    Theory (general estimator theorem, Sec. 3; our reading, number not re-verified): if
    E||g - grad f(x*)||^2 <= 2A D_f(x, x*) + B sigma^2 and E sigma+^2 <= (1 - rho) sigma^2 + 2C D_f,
    then with gamma <= 1/(A + 2BC/rho) the Lyapunov function ||x - x*||^2 + (gamma/p)^2 ||h - h*||^2
    + (2B/rho) gamma^2 sigma^2 contracts by max(1 - gamma mu, 1 - p^2, 1 - rho/2). For both estimators
    (per-sample smoothness L_s = max_ij L_ij, any batch size): A = 2 L_s, B = 2, C = rho L_s, so the
    default gamma = 1/(6 L_s) and p = sqrt(gamma mu_min). L-SVRG: rho = q, default
    q = max(2 gamma mu_min, b / m) (keeps the rate at gamma mu while refreshing about once per local
    epoch); SAGA: rho = 1 - (1 - 1/m)^b. Cost per local step: 2b/m_i (+ q) local gradients.
    """

    name = "proxskip_vr"
    paper = ("Malinovsky, Yi, Richtárik (2022), Variance reduced ProxSkip: algorithm, theory and application to "
             "federated learning (ProxSkip-LSVRG / ProxSkip-SAGA)")
    Params = ProxSkipVRParams
    state = ("x", "X", "H", "last_comm", "Y", "GY", "T", "Tbar", "_m", "_ar")

    def check(self):
        if not self.problem.has_sample_grads:
            raise ValueError(f"proxskip_vr needs a finite-sum problem with per-sample gradients, got {self.problem.name}")

    def theory_stepsize(self):
        return 1.0 / (6.0 * self.problem.L_sample_max)

    @property
    def q(self) -> float:
        if self.params.q is not None:
            return float(self.params.q)
        m = float(self.problem.m.to(torch.float64).mean())
        return min(1.0, max(2.0 * self.gamma * self.mu_min, self.params.batch_size / m))

    def init(self, x0):
        super().init(x0)
        pr = self.problem
        self._m = pr.m.cpu()
        self._ar = torch.arange(self.n)
        if self.params.estimator == "lsvrg":
            self.Y = self.X.clone()
            self.GY = pr.grads(self.Y)
            return
        # SAGA table G[i, j] = grad f_ij(x0): one pass over each client's samples
        M = int(self._m.max())
        self.T = torch.zeros(self.n, M, self.d, dtype=pr.dtype, device=pr.device)
        for j in range(M):
            rows = torch.nonzero(self._m > j).squeeze(1)
            idx = torch.full((rows.shape[0], 1), j, dtype=torch.long)
            self.T[rows.to(pr.device), j] = pr.sample_grads(self.X[rows.to(pr.device)], idx.to(pr.device), rows)
        self.Tbar = self.T.sum(1) / self._m.to(pr.device, pr.dtype)[:, None]

    def _estimate(self) -> torch.Tensor:
        pr, b, gen = self.problem, self.params.batch_size, self.ctx.generator("noise")
        idx = _draw(self._m, b, gen).to(pr.device)
        if self.params.estimator == "lsvrg":
            ar = self._ar
            both = pr.sample_grads(torch.cat([self.X, self.Y]), torch.cat([idx, idx]), torch.cat([ar, ar]))
            g = svrg(both[: self.n], both[self.n:], self.GY)
            refresh = torch.nonzero(torch.rand(self.n, generator=gen, dtype=torch.float64) < self.q).squeeze(1)
            if refresh.numel():
                r = refresh.to(pr.device)
                self.Y[r] = self.X[r]
                self.GY[r] = pr.grads(self.X[r], refresh)
            return g
        ar = torch.arange(self.n, device=pr.device)
        new = [pr.sample_grads(self.X, idx[:, k:k + 1]) for k in range(b)]
        g = sum(new[k] - self.T[ar, idx[:, k]] for k in range(b)) / b + self.Tbar
        inv_m = 1.0 / self._m.to(pr.device, pr.dtype)[:, None]
        for k in range(b):
            old = self.T[ar, idx[:, k]]
            self.Tbar = self.Tbar + (new[k] - old) * inv_m
            self.T[ar, idx[:, k]] = new[k]
        return g

    def step(self):
        self._skip_step(self._estimate())


def gradskip_probabilities(L_i: torch.Tensor, mu: float) -> tuple[float, torch.Tensor]:
    """GradSkip's theory choice: p = 1/sqrt(kappa_max) and q_i = (1 - 1/kappa_i) / (1 - 1/kappa_max),
    kappa_i = L_i / mu (q_i = 1 for every client when all kappa_i = 1)."""
    kappa = L_i.to(torch.float64) / mu
    kmax = float(kappa.max())
    if kmax <= 1.0:
        return 1.0, torch.ones_like(kappa)
    return 1.0 / math.sqrt(kmax), ((1 - 1 / kappa) / (1 - 1 / kmax)).clamp(0.0, 1.0)


def gradskip_stepsize(L_i: torch.Tensor, p: float, q: torch.Tensor) -> float:
    """The largest stepsize of the GradSkip analysis for given p and q_i:
    gamma = min_i 1 / (L_i (1 + (1 - q_i)(1/p^2 - 1))) (= 1/L_max at the default p, q_i)."""
    L = L_i.to(torch.float64)
    return float((1.0 / (L * (1 + (1 - q) * (1 / p ** 2 - 1)))).min())


class GradSkipParams(ProxSkipParams):
    #: per-client probabilities q_i of a local gradient step (one value or n values in [0, 1]);
    #: default (1 - 1/kappa_i) / (1 - 1/kappa_max)
    q: float | list[float] | None = None

    @model_validator(mode="after")
    def _q_range(self):
        qs = self.q if isinstance(self.q, list) else [self.q] if self.q is not None else []
        if any(not 0.0 <= float(v) <= 1.0 for v in qs):
            raise ValueError("q: probabilities must be in [0, 1]")
        return self


@register_method
class GradSkip(_Skip):
    """GradSkip: Maranjyan, Safaryan, Richtárik (2022), "GradSkip: communication-accelerated local
    gradient methods with better computational complexity" (arXiv 2210.16402), Algorithm 1.

    ProxSkip in which client i, at every iteration, keeps its control variate with probability q_i
    (eta_i = 1: hh_i = h_i, a normal local step) or replaces it by its current gradient (eta_i = 0:
    hh_i = grad f_i(x_i), so xh_i = x_i: no step); then the shared coin (probability p) decides
    communication exactly as in ProxSkip, with hh_i in place of h_i. A client that skipped stays
    put until the next communication, so it computes no new gradient (gradients are recomputed
    only for clients whose model changed; the meter counts exactly those).

    Theory (the paper's GradSkip theorem, Sec. 3; as we derive and recall it): with each f_i
    L_i-smooth and mu-strongly convex, gamma <= min_i 1/(L_i (1 + (1 - q_i)(1/p^2 - 1))) gives
    E Psi_T <= (1 - min(gamma mu, 1 - q_max (1 - p^2)))^T Psi_0. Defaults: gamma = 1/L_max,
    p = 1/sqrt(kappa_max), q_i = (1 - 1/kappa_i)/(1 - 1/kappa_max) (kappa_i = L_i/mu_min): the same
    rate and communication as ProxSkip, with client i expected to compute
    p / (p + (1 - p)(1 - q_i)) gradients per iteration instead of 1. q_i = 1 for all: ProxSkip.
    """

    name = "gradskip"
    paper = ("Maranjyan, Safaryan, Richtárik (2022), GradSkip: communication-accelerated local gradient methods "
             "with better computational complexity, Alg. 1")
    Params = GradSkipParams
    state = ("x", "X", "H", "last_comm", "Gc", "fresh")

    @cached_property
    def _defaults(self) -> tuple[float, torch.Tensor]:
        return gradskip_probabilities(self.problem.L_i, self.mu_min)

    @property
    def p(self) -> float:
        return float(self.params.p) if self.params.p is not None else self._defaults[0]

    @cached_property
    def q(self) -> torch.Tensor:
        """(n,) probabilities of a local gradient step (float64, CPU)."""
        if self.params.q is None:
            return self._defaults[1]
        return torch.as_tensor(self.params.q, dtype=torch.float64).expand(self.n).clone()

    def check(self):
        if isinstance(self.params.q, list) and len(self.params.q) != self.n:
            raise ValueError(f"gradskip: q lists {len(self.params.q)} values for {self.n} clients")

    def theory_stepsize(self):
        if self.params.p is None and self.params.q is None:
            return 1.0 / self.problem.L_max
        return gradskip_stepsize(self.problem.L_i, self.p, self.q)

    def init(self, x0):
        super().init(x0)
        self.Gc = self.zeros_clients()  # each client's gradient at its current x_i
        self.fresh = torch.zeros(self.n, dtype=torch.bool)

    def _gradients(self) -> torch.Tensor:
        stale = ~self.fresh
        if bool(stale.all()):
            self.Gc = self.problem.grads(self.X)
        elif bool(stale.any()):
            rows = torch.nonzero(stale).squeeze(1)
            r = rows.to(self.X.device)
            self.Gc[r] = self.problem.grads(self.X[r], rows)
        return self.Gc

    def _shadow(self, G: torch.Tensor) -> torch.Tensor:
        """hh: h_i with probability q_i, grad f_i(x_i) otherwise."""
        keep = torch.rand(self.n, generator=self.ctx.generator("skip"), dtype=torch.float64) < self.q
        return torch.where(keep.to(G.device)[:, None], self.H, G)

    def step(self):
        G = self._gradients()
        Hh = self._shadow(G)
        Xh = self.X - self.gamma * (G - Hh)
        self.last_comm = self.coin(self.p)
        if self.last_comm:
            self._communicate(Xh, Hh)
            self.fresh = torch.zeros(self.n, dtype=torch.bool)
        else:
            self.fresh = ~(Xh != self.X).any(1).cpu()  # unchanged models keep their gradient
            self.X, self.H = Xh, Hh
            self.x = Xh.mean(0)


@register_method
class GradSkipPlus(GradSkip):
    """GradSkip+: Maranjyan, Safaryan, Richtárik (2022), "GradSkip" (arXiv 2210.16402), Algorithm 2,
    for the federated (consensus) problem, with the gradient-skipping randomness given by an
    unbiased compressor C_Omega (``compressor``, variance Omega, applied to each client's row,
    locally: nothing is sent) and the prox-skipping randomness by the shared Bernoulli(p) coin
    (C_omega, omega = 1/p - 1):

        hh = grad f(x) - (1 + Omega)^{-1} C_Omega(grad f(x) - h),  xh = x - gamma (grad f(x) - hh),

    then the communication / h update of ProxSkip. C_Omega = identity (Omega = 0) is ProxSkip;
    a per-client Bernoulli(q_i) is GradSkip.

    Stepsize (our derivation along the GradSkip analysis, consistent with its special cases; the
    paper's GradSkip+ theorem could not be read): gamma = min_i 1/(L_i (1 + (1/p^2 - 1) Omega/(1 + Omega))),
    rate min(gamma mu, 1 - (1 - p^2)/(1 + Omega)); default p = 1/sqrt(kappa_max) as in ProxSkip.
    """

    name = "gradskip_plus"
    paper = "Maranjyan, Safaryan, Richtárik (2022), GradSkip, Alg. 2 (GradSkip+)"
    uses = ("compressor",)
    Params = ProxSkipParams

    def check(self):
        if self.compressor.omega is None:
            raise ValueError(f"gradskip_plus needs an unbiased compressor C_Omega, got {self.compressor.describe()}")

    @property
    def p(self) -> float:
        if self.params.p is not None:
            return float(self.params.p)
        return min(1.0, 1.0 / math.sqrt(self.problem.L_max / self.mu_min))

    @cached_property
    def q(self) -> torch.Tensor:
        return torch.full((self.n,), 1.0 / (1.0 + self.omega), dtype=torch.float64)

    def theory_stepsize(self):
        W = self.omega
        return float((1.0 / (self.problem.L_i * (1 + (1 / self.p ** 2 - 1) * W / (1 + W)))).min())

    def _shadow(self, G):
        C = self.compress(G - self.H).values
        return G - C / (1.0 + self.omega)
