"""Random reshuffling (sampling without replacement) with gradient compression.

Every client i walks through its own random permutation of its m_i samples, ``batch_size`` at a
time (:class:`optsim.problems.Reshuffler`), reshuffling at the end of each epoch.

* Sadiev, Malinovsky, Gorbunov, Sokolov, Khaled, Burlachenko, Richtárik (2022), "Federated
  optimization algorithms with random reshuffling and gradient compression", arXiv 2206.07021:
  :class:`QRR` (Q-RR, Alg. 1), :class:`DIANARR` (DIANA-RR, Alg. 2), :class:`QNASTYA`
  (Q-NASTYA, Alg. 3), :class:`DIANANASTYA` (DIANA-NASTYA, Alg. 4), and their with-replacement
  baselines :class:`QuantizedSGD` (``q_sgd``, compressed minibatch SGD; the quantizer is the ``qsgd`` compressor) and :class:`DIANASGD` (DIANA with minibatch
  stochastic gradients).
* Malinovsky, Richtárik (2022), "Federated random reshuffling with compression and variance
  reduction", arXiv 2205.03914: :class:`FedCRR` (compressed FedRR), :class:`FedCRRVR` (DIANA-type
  shifts: no dependence on the compression variance) and :class:`FedCRRVR2` (additionally the
  controlled linear perturbations of Malinovsky et al. 2021: no shuffling variance at the optimum).

One runner round is one communication as each paper defines it: Q-RR, DIANA-RR, Q-SGD and
DIANA-SGD communicate after every local step (one step = one round, an epoch is m_i / b rounds);
the NASTYA and FedCRR methods run a whole local epoch and then communicate once (one round = one
epoch). Clients with fewer samples take fewer local steps (m_i // b) and idle afterwards.

Stepsizes. L_max = max_ij L_ij (per-sample smoothness, :attr:`GLMProblem.L_sample_max`), mu the
strong convexity constant, n clients, m = max_i m_i / b local steps, omega the compressor's
variance, alpha = 1 / (1 + omega). The theorem statements could not be re-read (only the
abstracts were accessible here); the defaults below are our reading of the papers' theorems
where we remember their form, and conservative choices derived by the same arguments where we
do not -- each is marked. Users can always set ``stepsize`` / ``server_stepsize``.
"""
from __future__ import annotations

import torch
from pydantic import Field, PositiveInt

from ...problems import Reshuffler
from ..base import Method, MethodParams, register_method

__all__ = ["QRR", "QuantizedSGD", "DIANARR", "DIANASGD", "QNASTYA", "DIANANASTYA", "FedCRR", "FedCRRVR", "FedCRRVR2"]


def _needs_samples(method: Method) -> None:
    if method.problem.L_samples is None:
        raise ValueError(f"{method.name} needs a finite-sum problem with per-sample gradients "
                         f"(logreg, least_squares), got {method.problem.name}")


class RRParams(MethodParams):
    #: samples per local step (each client, without replacement within an epoch)
    batch_size: PositiveInt = 1


class _Shuffled(Method):
    """Shared parts: per-sample constants, the number of local steps per epoch."""

    uses = ("compressor",)
    Params = RRParams

    def check(self):
        _needs_samples(self)
        b, m_min = self.params.batch_size, int(self.problem.m.min())
        if b > m_min:
            raise ValueError(f"{self.name}: batch_size {b} exceeds the smallest client's {m_min} samples")

    @property
    def L_max(self) -> float:
        return self.problem.L_sample_max

    @property
    def steps(self) -> torch.Tensor:
        """(n,) local steps per epoch, m_i // b."""
        return self.problem.m.cpu() // self.params.batch_size

    @property
    def m(self) -> int:
        return int(self.steps.max())


@register_method
class QRR(_Shuffled):
    """Q-RR: Sadiev et al. (2022), arXiv 2206.07021, Algorithm 1 (Q-RR). Each step j of an epoch,
    client i takes the next ``batch_size`` samples of its permutation pi_i and sends the compressed
    minibatch gradient; the server steps and broadcasts:

        x^{j+1} = x^j - gamma (1/n) sum_i Q(grad f_{i, pi_i^j}(x^j)).

    Every step is a communication round. Stepsize gamma = 1 / ((1 + 2 omega / n) L_max) (the
    paper's Q-RR theorem, strongly convex f and convex f_ij; from our reading, not re-verified).
    With the identity compressor and batch_size = m_i it is gradient descent.
    """

    name = "q_rr"
    stepsize_source = "reading"
    paper = ("Sadiev, Malinovsky, Gorbunov, Sokolov, Khaled, Burlachenko, Richtárik (2022), Federated optimization "
             "algorithms with random reshuffling and gradient compression, Alg. 1 (Q-RR)")
    state = ("x", "rr")

    def theory_stepsize(self):
        return 1.0 / ((1 + 2 * self.omega / self.n) * self.L_max)

    def init(self, x0):
        self.x = x0
        self.rr = Reshuffler(self.problem, self.params.batch_size, self.ctx.generator("noise"))

    def _grads(self):
        return self.problem.sample_grads(self.x.expand(self.n, self.d), self.rr.next())

    def step(self):
        g = self.channel.uplink(self.compress(self._grads()))
        self.x = self.channel.broadcast(self.x - self.gamma * g)


@register_method
class QuantizedSGD(QRR):
    """Distributed compressed minibatch SGD, method ``q_sgd`` (QSGD: Alistarh, Grubic, Li, Tomioka, Vojnovic (2017),
    "QSGD: communication-efficient SGD via gradient quantization and encoding", with any unbiased
    compressor): each client draws ``batch_size`` samples *with* replacement, x+ = x - gamma (1/n)
    sum_i Q(g_i). The with-replacement baseline of Q-RR (Sadiev et al. 2022 compare the two);
    default stepsize the same as :class:`QRR`'s, 1 / ((1 + 2 omega / n) L_max), the form of the
    unified SGD theory's DCGD bound (Gorbunov, Hanzely, Richtárik 2020) up to a factor 2."""

    name = "q_sgd"
    stepsize_source = "reading"
    paper = "Alistarh, Grubic, Li, Tomioka, Vojnovic (2017), QSGD: communication-efficient SGD via gradient quantization and encoding"

    def init(self, x0):
        self.x = x0

    def _grads(self):
        return self.problem.minibatch_grads(self.x.expand(self.n, self.d), self.params.batch_size,
                                            self.ctx.generator("noise"))


class DIANARRParams(MethodParams):
    #: shift stepsize alpha; default 1 / (1 + omega)
    shift_stepsize: float | None = Field(None, gt=0, le=1)


@register_method
class DIANARR(_Shuffled):
    """DIANA-RR: Sadiev et al. (2022), arXiv 2206.07021, Algorithm 2 (DIANA-RR). Every client
    keeps one shift per *sample*, h_{i,l} (l = 1..m_i), learning grad f_{il}(x*). Step j of an
    epoch, with l = pi_i^j the client's next sample:

        Delta_i = Q(grad f_{il}(x^j) - h_{i,l}),   g^j = (1/n) sum_i (h_{i,l} + Delta_i),
        h_{i,l} += alpha Delta_i,                  x^{j+1} = x^j - gamma g^j.

    The server mirrors the shifts (it knows the permutations from the shared seed), so only the
    compressed differences travel. One sample per step (``batch_size`` 1, as in the algorithm).
    alpha = 1 / (1 + omega); gamma = min(alpha / (2 m mu), 1 / ((1 + 6 omega / n) L_max)) (the
    paper's DIANA-RR theorem; from our reading, not re-verified). Because the shifts learn the
    per-sample gradients at x*, the remaining error comes from reshuffling only (O(gamma^2)),
    not from compression.
    """

    name = "diana_rr"
    stepsize_source = "reading"
    paper = ("Sadiev, Malinovsky, Gorbunov, Sokolov, Khaled, Burlachenko, Richtárik (2022), Federated optimization "
             "algorithms with random reshuffling and gradient compression, Alg. 2 (DIANA-RR)")
    Params = DIANARRParams
    state = ("x", "h", "rows", "rr")

    def check(self):
        _needs_samples(self)

    @property
    def steps(self):
        return self.problem.m.cpu().clone()

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return float(a) if a is not None else 1.0 / (1.0 + self.omega)

    def theory_stepsize(self):
        g = 1.0 / ((1 + 6 * self.omega / self.n) * self.L_max)
        mu = self.problem.mu
        return min(g, self.shift_stepsize / (2 * self.m * mu)) if mu else g

    def init(self, x0):
        self.x = x0
        self.rr = Reshuffler(self.problem, 1, self.ctx.generator("noise"))
        self.h = torch.zeros(self.n, int(self.problem.m.max()), self.d, dtype=self.problem.dtype,
                             device=self.problem.device)
        self.rows = torch.arange(self.n, device=self.problem.device)

    def step(self):
        idx = self.rr.next()
        hs = self.h[self.rows, idx[:, 0]]
        G = self.problem.sample_grads(self.x.expand(self.n, self.d), idx)
        msg = self.compress(G - hs)
        g = hs.mean(0) + self.channel.uplink(msg)
        self.h[self.rows, idx[:, 0]] = hs + self.shift_stepsize * msg.values
        self.x = self.channel.broadcast(self.x - self.gamma * g)


class DIANASGDParams(RRParams):
    #: shift stepsize alpha; default 1 / (1 + omega)
    shift_stepsize: float | None = Field(None, gt=0, le=1)


@register_method
class DIANASGD(_Shuffled):
    """DIANA with minibatch stochastic gradients drawn *with* replacement (Mishchenko, Gorbunov,
    Takáč, Richtárik (2019), "Distributed learning with compressed gradient differences",
    Algorithm 1 with stochastic gradients): one shift h_i per client,

        Delta_i = Q(g_i(x) - h_i),   g = h + (1/n) sum_i Delta_i,   h_i += alpha Delta_i,   x+ = x - gamma g.

    The with-replacement baseline of DIANA-RR (Sadiev et al. 2022). alpha = 1/(1 + omega);
    gamma = 1 / ((1 + 6 omega / n) L_max) (DIANA's strongly convex stepsize of
    :class:`~optsim.methods.compressed.DIANA` with the per-sample L_max of the stochastic
    gradients). It converges to a neighbourhood of size O(gamma sigma^2) set by the sampling noise.
    """

    name = "diana_sgd"
    stepsize_source = "reading"
    paper = ("Mishchenko, Gorbunov, Takáč, Richtárik (2019), Distributed learning with compressed gradient "
             "differences, Alg. 1 (stochastic gradients)")
    Params = DIANASGDParams
    state = ("x", "H", "h")

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return float(a) if a is not None else 1.0 / (1.0 + self.omega)

    def theory_stepsize(self):
        return 1.0 / ((1 + 6 * self.omega / self.n) * self.L_max)

    def init(self, x0):
        self.x = x0
        self.H = self.zeros_clients()
        self.h = self.H.mean(0)

    def step(self):
        G = self.problem.minibatch_grads(self.x.expand(self.n, self.d), self.params.batch_size,
                                         self.ctx.generator("noise"))
        msg = self.compress(G - self.H)
        delta = self.channel.uplink(msg)
        g = self.h + delta
        a = self.shift_stepsize
        self.H.add_(msg.values, alpha=a)
        self.h = self.h + a * delta
        self.x = self.channel.broadcast(self.x - self.gamma * g)


# ---- local-epoch methods: one round = one local RR epoch + one compressed communication ----------

class LocalRRParams(RRParams):
    #: server stepsize eta (NASTYA methods; default from the theorem, see the class)
    server_stepsize: float | None = Field(None, gt=0)
    #: shift stepsize alpha (DIANA-type variants); default 1 / (1 + omega)
    shift_stepsize: float | None = Field(None, gt=0, le=1)
    #: FedCRR-VR-2: probability that the reference point y of the perturbations moves to x_t in a round
    refresh_prob: float = Field(1.0, gt=0, le=1)


class _LocalRR(_Shuffled):
    """One round: every client runs one RR epoch of local steps with stepsize gamma from x_t,
    x_i^{j+1} = x_i^j - gamma grad f_{i, pi_i^j}(x_i^j), and sends a compressed message built from
    its displacement x_t - x_i (``normalized``: divided by gamma * (local steps), the NASTYA
    "gradient" g_i); with ``shifts`` the message is Q(u_i - h_i) with DIANA shifts h_i; with
    ``control`` the local gradients are perturbed to grad f_il(x) - grad f_il(y) + grad f_i(y)."""

    Params = LocalRRParams
    normalized = True
    shifts = False
    control = False

    @property
    def shift_stepsize(self) -> float:
        a = self.params.shift_stepsize
        return float(a) if a is not None else 1.0 / (1.0 + self.omega)

    @property
    def server_stepsize(self) -> float:
        return 1.0

    def init(self, x0):
        self.x = x0
        self.rows = torch.arange(self.n, device=self.problem.device)
        if self.shifts:
            self.H = self.zeros_clients()
            self.h = self.H.mean(0)
        if self.control:
            self.y = x0.clone()
            self.Gy = self.problem.grads(x0.expand(self.n, self.d))  # full local gradients at y (no communication)

    def _local_epoch(self) -> torch.Tensor:
        """(n, d) displacements x_t - x_i after one local epoch."""
        gen = self.ctx.generator("noise")
        rr = Reshuffler(self.problem, self.params.batch_size, gen)  # fresh permutations for this epoch
        steps = self.steps.to(self.problem.device)
        Xl = self.x.expand(self.n, self.d).clone()
        full = int(steps.min())  # steps every client takes; afterwards only the larger clients go on
        for j in range(self.m):
            idx = rr.next()
            if j < full:
                G = self.problem.sample_grads(Xl, idx)
                if self.control:
                    G = G - self.problem.sample_grads(self.y.expand(self.n, self.d), idx) + self.Gy
                Xl -= self.gamma * G
                continue
            rows = self.rows[steps > j]
            G = self.problem.sample_grads(Xl[rows], idx[rows], clients=rows)
            if self.control:
                G = G - self.problem.sample_grads(self.y.expand(rows.shape[0], self.d), idx[rows], clients=rows) \
                    + self.Gy[rows]
            Xl[rows] -= self.gamma * G
        return self.x - Xl

    def step(self):
        if self.control and self.coin(self.params.refresh_prob):
            self.y = self.x.clone()
            self.Gy = self.problem.grads(self.x.expand(self.n, self.d))
        U = self._local_epoch()
        if self.normalized:
            U = U / (self.gamma * self.steps.to(U)[:, None])
        if self.shifts:
            msg = self.compress(U - self.H)
            delta = self.channel.uplink(msg)
            g = self.h + delta
            a = self.shift_stepsize
            self.H.add_(msg.values, alpha=a)
            self.h = self.h + a * delta
        else:
            g = self.channel.uplink(self.compress(U))
        self.x = self.channel.broadcast(self.x - self.server_stepsize * g)


@register_method
class QNASTYA(_LocalRR):
    """Q-NASTYA: Sadiev et al. (2022), arXiv 2206.07021, Algorithm 3 (Q-NASTYA). Each round every
    client runs one local RR epoch with stepsize gamma from x_t, forms
    g_i = (x_t - x_i^{m}) / (gamma m) (the average of its local gradients) and sends Q(g_i); the
    server steps with its own stepsize eta: x_{t+1} = x_t - eta (1/n) sum_i Q(g_i).

    Stepsizes (from our reading of the paper's Q-NASTYA theorem, not re-verified):
    gamma = 1 / (16 m L_max), eta = 1 / (16 L_max (1 + omega / n)). With the identity compressor
    and batch_size = m_i it is gradient descent with stepsize eta.
    """

    name = "q_nastya"
    stepsize_source = "reading"
    paper = ("Sadiev, Malinovsky, Gorbunov, Sokolov, Khaled, Burlachenko, Richtárik (2022), Federated optimization "
             "algorithms with random reshuffling and gradient compression, Alg. 3 (Q-NASTYA)")
    state = ("x", "rows")

    def theory_stepsize(self):
        return 1.0 / (16 * self.m * self.L_max)

    @property
    def server_stepsize(self) -> float:
        e = self.params.server_stepsize
        return float(e) if e is not None else 1.0 / (16 * self.L_max * (1 + self.omega / self.n))


@register_method
class DIANANASTYA(QNASTYA):
    """DIANA-NASTYA: Sadiev et al. (2022), arXiv 2206.07021, Algorithm 4 (DIANA-NASTYA): Q-NASTYA
    whose clients compress g_i - h_i with DIANA shifts h_i (learning g_i at x*):

        Delta_i = Q(g_i - h_i),   x_{t+1} = x_t - eta (h + (1/n) sum_i Delta_i),   h_i += alpha Delta_i.

    alpha = 1 / (1 + omega); gamma = 1 / (16 m L_max); eta = min(alpha / (2 mu),
    1 / (16 L_max (1 + 9 omega / n))) (our reading of the DIANA-NASTYA theorem, not re-verified;
    conservative). The compression variance vanishes at the solution.
    """

    name = "diana_nastya"
    stepsize_source = "reading"
    paper = ("Sadiev, Malinovsky, Gorbunov, Sokolov, Khaled, Burlachenko, Richtárik (2022), Federated optimization "
             "algorithms with random reshuffling and gradient compression, Alg. 4 (DIANA-NASTYA)")
    shifts = True
    state = ("x", "H", "h", "rows")

    @property
    def server_stepsize(self) -> float:
        e = self.params.server_stepsize
        if e is not None:
            return float(e)
        eta = 1.0 / (16 * self.L_max * (1 + 9 * self.omega / self.n))
        mu = self.problem.mu
        return min(eta, self.shift_stepsize / (2 * mu)) if mu else eta


@register_method
class FedCRR(_LocalRR):
    """Compressed FedRR (FedCRR): Malinovsky, Richtárik (2022), "Federated random reshuffling with
    compression and variance reduction", arXiv 2205.03914. FedRR (Mishchenko, Khaled, Richtárik
    2021) with compressed uplink: every client runs one local RR epoch with stepsize gamma from
    x_t and sends Q(x_t - x_i^{m}); the server averages, x_{t+1} = x_t - (1/n) sum_i Q(x_t - x_i^m)
    (FedRR's x_{t+1} = (1/n) sum_i x_i^m when Q is the identity). No separate server stepsize.

    Stepsize (not confirmed: the theorem could not be re-read): gamma = 1 / (16 m L_max (1 + omega/n)),
    the Q-NASTYA constraints with the server step eta = gamma m. The compression variance leaves
    an error floor proportional to omega; :class:`FedCRRVR` removes it.
    """

    name = "fedcrr"
    stepsize_source = "derived"
    paper = ("Malinovsky, Richtárik (2022), Federated random reshuffling with compression and variance "
             "reduction, FedCRR (compressed FedRR)")
    normalized = False
    state = ("x", "rows")

    def theory_stepsize(self):
        return 1.0 / (16 * self.m * self.L_max * (1 + self.omega / self.n))


@register_method
class FedCRRVR(FedCRR):
    """FedCRR-VR: Malinovsky, Richtárik (2022), arXiv 2205.03914, compressed FedRR with DIANA-type
    variance reduction of the compression: clients send Delta_i = Q(u_i - h_i), u_i = x_t - x_i^m,
    and x_{t+1} = x_t - (h + (1/n) sum_i Delta_i), h_i += alpha Delta_i, alpha = 1/(1 + omega).
    The shifts learn u_i at the method's fixed point, so the error floor no longer depends on
    omega. Stepsize (not confirmed): gamma = min(1 / (16 m L_max (1 + 9 omega / n)), alpha / (2 m mu)),
    DIANA-NASTYA's constraints with eta = gamma m.
    """

    name = "fedcrr_vr"
    stepsize_source = "derived"
    paper = ("Malinovsky, Richtárik (2022), Federated random reshuffling with compression and variance "
             "reduction, FedCRR-VR")
    shifts = True
    state = ("x", "rows", "H", "h")

    def theory_stepsize(self):
        g = 1.0 / (16 * self.m * self.L_max * (1 + 9 * self.omega / self.n))
        mu = self.problem.mu
        return min(g, self.shift_stepsize / (2 * self.m * mu)) if mu else g


@register_method
class FedCRRVR2(FedCRRVR):
    """FedCRR-VR-2: Malinovsky, Richtárik (2022), arXiv 2205.03914: FedCRR-VR whose local steps use
    the controlled linear perturbations of Malinovsky, Sailanbayev, Richtárik (2021), "Random
    reshuffling with variance reduction": client i runs RR on
    f_il(x) + <grad f_i(y) - grad f_il(y), x>, i.e. steps with grad f_il(x) - grad f_il(y) + grad f_i(y),
    y a reference point. At y = x* every perturbed sample has the same gradient, so the shuffling
    variance at the optimum disappears too. y moves to x_t (the broadcast model; clients compute
    their full local gradient there, no communication) with probability ``refresh_prob`` per round,
    default 1 (every epoch; how often the paper refreshes y could not be confirmed). Each local
    step costs two sample gradients. Stepsize as :class:`FedCRRVR`.
    """

    name = "fedcrr_vr2"
    stepsize_source = "derived"
    paper = ("Malinovsky, Richtárik (2022), Federated random reshuffling with compression and variance "
             "reduction, FedCRR-VR-2")
    control = True
    state = ("x", "rows", "H", "h", "y", "Gy")
