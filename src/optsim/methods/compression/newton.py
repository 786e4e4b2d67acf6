"""Newton-type methods that learn the clients' Hessians through compressed messages: FedNL and
the Newton-3PC family (EF21-type compression, LAG, CLAG, Bernoulli aggregation BAG / CBAG,
adaptive thresholding), with bidirectional compression and partial participation.

Papers
------
* Safaryan, Islamov, Qian, Richtárik (2021), "FedNL: making Newton-type methods applicable to
  federated learning", arXiv 2106.02969 -- :class:`FedNL` (Algorithm 1, Options 1 and 2).
* Islamov, Qian, Hanzely, Safaryan, Richtárik (2022), "Distributed Newton-type methods with
  communication compression and Bernoulli aggregation", arXiv 2206.03588 -- :class:`Newton3PC`
  (Newton-3PC), :class:`Newton3PCBC` (bidirectional: model 3PC + Bernoulli gradients) and
  :class:`Newton3PCPP` (partial participation, the FedNL-PP structure with a 3PC Hessian update).

Hessians on the wire
--------------------
A client's Hessian (or Hessian difference) is symmetric, so it travels as its upper triangle,
D = d (d + 1) / 2 numbers, packed *isometrically*: diagonal entries as they are, off-diagonal
entries times sqrt(2) (:class:`SymPacking`). The Frobenius norm of a symmetric matrix equals the
Euclidean norm of its packed vector, so every compressor of ``optsim.compress`` applied to the
packed rows (m, D) keeps its constants *in the Frobenius norm* the papers use: top-k is
contractive with alpha = k / D, rand-k unbiased with omega = D / k - 1, and the decoded matrix
is symmetric. Two matrix compressors live in :mod:`optsim.compress.matrix`: ``rank_r`` (FedNL's
Rank-R, via a batched symmetric eigendecomposition) and ``threshold`` (Newton-3PC's adaptive
thresholding). A dense Hessian message costs D floats (FedNL's count, d (d + 1) / 2 floats).
The method's ``compressor`` is built for dimension D (:meth:`Newton3PC.component_dim`).

Three point compressors for matrices (Newton-3PC, Sec. 3): a map C_{H,Y}(X) with
E||C_{H,Y}(X) - X||_F^2 <= (1 - A) ||H - Y||_F^2 + B ||X - Y||_F^2, used as
H_i^{k+1} = C_{H_i^k, grad^2 f_i(x^k)}(grad^2 f_i(x^{k+1})). The mechanisms (``mechanism``):

* ``ef21``: H + a C(X - H) (a = 1 for a contractive C; FedNL's a = 1 / (omega + 1) for unbiased C);
* ``lag``:  X if ||X - H||^2 > zeta ||X - Y||^2, else H (dense message or nothing);
* ``clag``: H + a C(X - H) under the same trigger, else H;
* ``bag``:  X with probability p (each client its own coin), else H -- a client whose coin says
  "skip" neither computes its Hessian nor sends anything for it (Bernoulli aggregation);
* ``cbag``: H + a C(X - H) with probability p, else H.

EF21, LAG and CLAG are the project's reusable mechanisms (:mod:`optsim.mechanisms.three_pc`, applied to the
packed rows); Bernoulli aggregation is implemented here because it changes *which Hessians are
computed*, not only what is sent.

Stepsize: the papers' Newton step is the unit step (their local theorems are stated for it), so
:meth:`theory_stepsize` returns 1; ``stepsize_mult`` damps it. Newton-3PC's local theorems
(linear rate independent of the condition number, superlinear for some mechanisms) hold from
x^0 close enough to x* with H_i^0 close enough to grad^2 f_i(x*); the theorem numbers could not
be re-read (the arXiv text was not accessible here), so none is quoted.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...compress import Message
from ...compress.matrix import SymPacking, packed_dim
from ...sampling import Nice
from ..base import Method, MethodParams, register_method
from ...mechanisms import make_three_pc

__all__ = ["MECHANISMS", "FedNL", "Newton3PC", "Newton3PCBC", "Newton3PCPP"]

#: mechanisms of the Hessian update: the 3PC module's ef21 / lag / clag, and Bernoulli aggregation here
MECHANISMS = ("ef21", "lag", "clag", "bag", "cbag")


class NewtonParams(MethodParams):
    #: 3PC mechanism of the Hessian update (see the module docstring)
    mechanism: Literal["ef21", "lag", "clag", "bag", "cbag"] = "ef21"
    #: 1: x+ = x - [H]_mu^{-1} grad f(x) (projection onto {M >= mu I}); 2: (H + l I)^{-1}, l = mean_i ||H_i - grad^2 f_i||_F
    option: Literal[1, 2] = 1
    #: projection level of Option 1; default the problem's strong convexity constant mu
    mu: float | None = Field(None, gt=0)
    #: Hessian learning rate a of H_i += a C(.): default 1 (contractive C), 1 / (omega + 1) (unbiased C)
    hessian_stepsize: float | None = Field(None, gt=0, le=1)
    #: LAG / CLAG trigger: send when ||X - H||_F^2 > zeta ||X - Y||_F^2
    zeta: float = Field(1.0, ge=0)
    #: BAG / CBAG: probability that a client computes and sends its Hessian in a round
    prob: float = Field(0.5, gt=0, le=1)
    #: H_i^0: the local Hessian at x^0 sent in full (as in the papers' experiments) or zero
    init: Literal["hessian", "zero"] = "hessian"


@register_method
class Newton3PC(Method):
    """Newton-3PC (Islamov, Qian, Hanzely, Safaryan, Richtárik 2022, "Distributed Newton-type
    methods with communication compression and Bernoulli aggregation", arXiv 2206.03588,
    Algorithm Newton-3PC):

        x^{k+1} = x^k - [H^k]_mu^{-1} grad f(x^k)           (server; Option 2: (H^k + l^k I)^{-1})
        H_i^{k+1} = C_{H_i^k, grad^2 f_i(x^k)}(grad^2 f_i(x^{k+1}))   (client i, a 3PC mechanism)
        H^{k+1} = (1/n) sum_i H_i^{k+1}                      (server, from the compressed messages)

    [H]_mu is the Frobenius projection onto {M symmetric, M >= mu I} (eigenvalues clamped at mu),
    mu = the problem's strong convexity constant by default. One round: the server steps and
    broadcasts x^{k+1} (d floats down); each client sends grad f_i(x^{k+1}) (d floats) and its
    Hessian message (the mechanism's bits: 0 when it skips), plus l_i (one float) with Option 2.
    Initialization (round 0): grad f_i(x^0) and H_i^0 = grad^2 f_i(x^0) sent in full (``init``).
    Mechanisms and Hessian packing: see the module docstring. Stepsize: the unit Newton step.
    """

    name = "newton_3pc"
    stepsize_source = "reading"
    paper = ("Islamov, Qian, Hanzely, Safaryan, Richtárik (2022), Distributed Newton-type methods with "
             "communication compression and Bernoulli aggregation, Newton-3PC")
    uses = ("compressor",)
    Params = NewtonParams
    #: FedNL's timing: the Hessian learned at x^k enters the step of the *next* round
    lagged = False
    state = ("x", "g", "H", "H_i", "Y", "l", "l_i", "all", "pack")

    @classmethod
    def component_dim(cls, component, problem):
        return packed_dim(problem.d) if component == "compressor" else problem.d

    def check(self):
        pr = self.params
        comp = self.compressor
        if pr.mechanism in ("lag", "bag") and comp is not None and comp.name != "identity":
            raise ValueError(f"{self.name}: mechanism '{pr.mechanism}' sends dense Hessians; use "
                             f"'{'c' + pr.mechanism}' to combine it with {comp.describe()}")
        if pr.option == 1 and pr.mu is None and not self.problem.mu:
            raise ValueError(f"{self.name}: Option 1 projects onto {{H >= mu I}} and {self.problem.name} has no "
                             "strong convexity constant: set 'mu' or use option: 2")
        if pr.mechanism in ("ef21", "lag", "clag"):
            inner = None if pr.mechanism == "lag" else comp
            self.mechanism = make_three_pc(pr.mechanism, inner, pr.zeta, self.channel.float_bits)

    def theory_stepsize(self):
        return 1.0

    @property
    def mu(self) -> float:
        return float(self.params.mu if self.params.mu is not None else self.problem.mu)

    @property
    def hessian_stepsize(self) -> float:
        a = self.params.hessian_stepsize
        if a is not None:
            return float(a)
        c = self.compressor
        return 1.0 if c is None or c.alpha is not None or c.omega is None else 1.0 / (c.omega + 1.0)

    # ---- helpers -----------------------------------------------------------------------------
    def _weights(self, m: int) -> torch.Tensor:
        return torch.full((m,), 1.0 / self.n, dtype=self.problem.dtype, device=self.problem.device)

    def _rows(self, rows: torch.Tensor):
        """(index into the clients' state, ``clients`` argument of oracles and channel) for ``rows``:
        all clients use a slice and None, so that nothing (the problem's data included) is copied."""
        return (slice(None), None) if rows is self.all else (rows, rows)

    def _hessians(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Packed local Hessians of the clients ``rows`` at their points ``x`` ((d,) or (m, d))."""
        X = x.expand(rows.shape[0], self.d) if x.ndim == 1 else x
        return self.pack.pack(self.problem.hessians(X, clients=self._rows(rows)[1]))

    def _matrix(self, H: torch.Tensor, l: torch.Tensor | None) -> torch.Tensor:
        """The server's Newton matrix: [H]_mu (Option 1) or H + l I (Option 2), as (d, d)."""
        M = self.pack.unpack(H.reshape(1, -1))[0]
        if self.params.option == 1:
            ev, V = torch.linalg.eigh(M)
            return (V * ev.clamp_min(self.mu)) @ V.T
        return M + float(l) * torch.eye(self.d, dtype=M.dtype, device=M.device)

    def _learn(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """The clients ``rows`` (now at ``x``) run the 3PC Hessian update and send it; returns the
        rows' new packed Hessians (None when, under Bernoulli aggregation, only senders computed them)."""
        pr, m, dev = self.params, rows.shape[0], self.problem.device
        if pr.mechanism in ("bag", "cbag"):
            send = (torch.rand(m, generator=self.ctx.generator("method"), dtype=torch.float64) < pr.prob).to(dev)
            senders = rows[send]
            lazy = pr.option == 1  # only the clients that send compute their Hessian
            if lazy:
                X = None
                Xs = (self._hessians(x if x.ndim == 1 else x[send], senders) if senders.numel() else
                      torch.zeros(0, self.pack.D, dtype=self.problem.dtype, device=dev))
            else:
                X = self._hessians(x, rows)
                Xs = X[send]
            diff = Xs - self.H_i[senders]
            msg = self.channel.dense(diff) if pr.mechanism == "bag" else self.compress(diff, senders)
            a = 1.0 if pr.mechanism == "bag" else self.hessian_stepsize
        else:
            X = self._hessians(x, rows)
            idx, senders = self._rows(rows)
            msg = self.mechanism(self.H_i[idx], None if self.Y is None else self.Y[idx], X,
                                 self.ctx.generator("compressor"), senders)
            a = 1.0 if pr.mechanism == "lag" else self.hessian_stepsize
            if self.Y is not None:
                self.Y[idx] = X
        self._fold(senders, a, msg)
        return X

    def _fold(self, senders: torch.Tensor | None, a: float, msg: Message) -> None:
        """The senders (None: all) apply H_i += a * values and send the message; the server adds
        a (1/n) sum of them to H."""
        idx = slice(None) if senders is None else senders
        self.H_i[idx] += a * msg.values
        w = None if senders is None else self._weights(senders.shape[0])
        self.H = self.H + a * self.channel.uplink(msg, clients=senders, weights=w)

    def _send_l(self, X: torch.Tensor, rows: torch.Tensor) -> None:
        """Option 2: clients send l_i = ||H_i - grad^2 f_i||_F (one float); the server keeps the mean."""
        idx, cl = self._rows(rows)
        new = (self.H_i[idx] - X).norm(dim=1)
        delta = (new - self.l_i[idx])[:, None]
        self.l_i[idx] = new
        w = None if cl is None else self._weights(rows.shape[0])
        self.l = self.l + self.channel.uplink(self.channel.dense(delta), clients=cl, weights=w)[0]

    # ---- the method ----------------------------------------------------------------------------
    def _init_hessian_state(self, X0: torch.Tensor | None) -> None:
        """Learned Hessians H_i (sent uncompressed when ``init`` = "hessian", else zero), the 3PC
        reference Y (LAG/CLAG) and the option-2 shifts l_i, from the packed Hessians X0 at x^0."""
        pr, dev = self.params, self.problem.device
        if pr.init == "hessian":
            self.H_i = X0.clone()
            self.H = self.channel.uplink(self.channel.dense(X0))
        else:
            self.H_i = torch.zeros(self.n, self.pack.D, dtype=self.problem.dtype, device=dev)
            self.H = self.H_i.mean(0)
        self.Y = X0.clone() if pr.mechanism in ("lag", "clag") else None
        self.l_i = torch.zeros(self.n, dtype=self.problem.dtype, device=dev)
        self.l = torch.zeros((), dtype=self.problem.dtype, device=dev)

    def init(self, x0):
        pr, dev = self.params, self.problem.device
        self.pack = SymPacking(self.d, self.problem.dtype, dev)
        self.all = torch.arange(self.n, device=dev)
        self.x = x0
        if not self.lagged:  # FedNL's clients send their gradients within each round instead
            self.g = self.channel.uplink(self.problem.grads(x0.expand(self.n, self.d)))
        need = pr.init == "hessian" or (pr.option == 2 and not self.lagged) or pr.mechanism in ("lag", "clag")
        X0 = self._hessians(x0, self.all) if need else None
        self._init_hessian_state(X0)
        if pr.option == 2 and not self.lagged:
            self._send_l(X0, self.all)

    def step(self):
        if self.lagged:
            return self._step_lagged()
        x_new = self.x - self.gamma * torch.linalg.solve(self._matrix(self.H, self.l), self.g)
        self.x = self.channel.broadcast(x_new)
        self.g = self.channel.uplink(self.problem.grads(self.x.expand(self.n, self.d)))
        X = self._learn(self.x, self.all)
        if self.params.option == 2:
            self._send_l(X, self.all)

    def _step_lagged(self):
        """FedNL: the clients, at x^k, send grad f_i(x^k), l_i^k and C(grad^2 f_i(x^k) - H_i^k); the
        server steps with H^k and only then folds the compressed Hessians into H^{k+1}."""
        pr = self.params
        g = self.channel.uplink(self.problem.grads(self.x.expand(self.n, self.d)))
        X = self._hessians(self.x, self.all)
        if pr.option == 2:
            self._send_l(X, self.all)
        M = self._matrix(self.H, self.l)
        msg = self.compress(X - self.H_i)
        a = self.hessian_stepsize
        self.H_i += a * msg.values
        dH = self.channel.uplink(msg)
        x_new = self.x - self.gamma * torch.linalg.solve(M, g)
        self.H = self.H + a * dH
        self.x = self.channel.broadcast(x_new)


@register_method
class FedNL(Newton3PC):
    """FedNL: Safaryan, Islamov, Qian, Richtárik (2021), "FedNL: making Newton-type methods
    applicable to federated learning", arXiv 2106.02969, Algorithm 1. Each round the clients, at
    x^k, send grad f_i(x^k), S_i^k = C(grad^2 f_i(x^k) - H_i^k) (and l_i^k = ||H_i^k -
    grad^2 f_i(x^k)||_F for Option 2); then

        x^{k+1} = x^k - [H^k]_mu^{-1} grad f(x^k)   (Option 1)   or   (H^k + l^k I)^{-1} grad f(x^k)   (Option 2),
        H_i^{k+1} = H_i^k + a S_i^k,   H^{k+1} = H^k + a (1/n) sum_i S_i^k.

    Hessian learning rate a: 1 for a contractive C (the paper also allows 1 - sqrt(1 - alpha)),
    1 / (omega + 1) for an unbiased C, as in the paper's theorems for the two compressor classes.
    Unit Newton step. Unlike :class:`Newton3PC` (whose 3PC form uses the Hessian at x^{k+1} in the
    step from x^{k+1}) the Hessian information enters one round later. Only the EF21-type update
    (``mechanism: ef21``) is FedNL's.
    """

    name = "fednl"
    stepsize_source = "theorem"
    paper = ("Safaryan, Islamov, Qian, Richtárik (2021), FedNL: making Newton-type methods applicable to "
             "federated learning, Alg. 1")
    lagged = True

    def check(self):
        super().check()
        if self.params.mechanism != "ef21":
            raise ValueError("fednl learns Hessians with H_i += a C(.) only; use newton_3pc for other 3PC mechanisms")


class NewtonBCParams(NewtonParams):
    #: probability p of a gradient round (Bernoulli aggregation of gradients); otherwise the server
    #: uses the first-order model g = [H]_mu (z - w) + grad f(w) from the last gradient point w
    grad_prob: float = Field(1.0, gt=0, le=1)
    #: step of the model 3PC z+ = z + eta C_M(x+ - z): default 1 (contractive C_M), 1/(omega_M + 1) (unbiased)
    model_stepsize: float | None = Field(None, gt=0, le=1)


@register_method
class Newton3PCBC(Newton3PC):
    """Newton-3PC-BC, bidirectional compression (Islamov et al. 2022, arXiv 2206.03588; the
    FedNL-BC structure of Safaryan et al. 2021, Algorithm FedNL-BC, with 3PC updates). Clients and
    server share a compressed model z; w is the last point where gradients were computed:

        g^k = M^k (z^k - w^k) + grad f(w^k),   M^k = [H^k]_mu  (Option 2: H^k + l^k I),
        x^{k+1} = z^k - (M^k)^{-1} g^k                       (server; the model the metrics see)
        z^{k+1} = z^k + eta C_M(x^{k+1} - z^k)               (broadcast: the down_compressor's bits)
        xi^k ~ Be(p) (one coin): if 1, clients send grad f_i(z^{k+1}) and w^{k+1} = z^{k+1}
        H_i^{k+1} = C_{H_i^k, grad^2 f_i(z^k)}(grad^2 f_i(z^{k+1}))   (any 3PC mechanism)

    With C_M the identity and p = 1 the iterates are exactly :class:`Newton3PC`'s. With ``bag``
    Hessians and xi = 0, a client that skips sends nothing in that round. Defaults: p = 1 (no
    gradient skipping), eta = 1 for contractive C_M, 1/(omega_M + 1) for unbiased C_M (the
    theorem's choices for the model mechanism could not be re-read; these are EF21 / DIANA's).
    """

    name = "newton_3pc_bc"
    stepsize_source = "reading"
    paper = ("Islamov, Qian, Hanzely, Safaryan, Richtárik (2022), Distributed Newton-type methods with "
             "communication compression and Bernoulli aggregation, Newton-3PC-BC")
    uses = ("compressor", "down_compressor")
    Params = NewtonBCParams
    state = ("x", "g", "H", "H_i", "Y", "l", "l_i", "all", "pack", "w", "z", "g_w", "last_grad")

    @property
    def model_stepsize(self) -> float:
        e = self.params.model_stepsize
        if e is not None:
            return float(e)
        c = self.down_compressor
        return 1.0 if c is None or c.alpha is not None or c.omega is None else 1.0 / (c.omega + 1.0)

    def init(self, x0):
        super().init(x0)
        self.z, self.w, self.g_w = x0.clone(), x0.clone(), self.g
        self.last_grad = True

    def step(self):
        M = self._matrix(self.H, self.l)
        g = M @ (self.z - self.w) + self.g_w
        self.x = self.z - self.gamma * torch.linalg.solve(M, g)
        s = self.channel.broadcast(self.compress_down(self.x - self.z))
        self.z = self.z + self.model_stepsize * s
        self.last_grad = self.coin(self.params.grad_prob)
        if self.last_grad:
            self.g_w = self.channel.uplink(self.problem.grads(self.z.expand(self.n, self.d)))
            self.w = self.z.clone()
        X = self._learn(self.z, self.all)
        if self.params.option == 2:
            self._send_l(X, self.all)


class NewtonPPParams(NewtonParams):
    #: Option 2 (H + l I) only: the method is built on the clients' l_i
    option: Literal[2] = 2


@register_method
class Newton3PCPP(Newton3PC):
    """Newton-3PC with partial participation (Islamov et al. 2022, arXiv 2206.03588; the FedNL-PP
    structure of Safaryan et al. 2021, Algorithm FedNL-PP, with a 3PC Hessian update). Client i
    keeps its last point w_i, H_i, l_i = ||H_i - grad^2 f_i(w_i)||_F and
    g_i = (H_i + l_i I) w_i - grad f_i(w_i); the server keeps the means H, l, g and

        x^{k+1} = (H^k + l^k I)^{-1} g^k,

    sends it to tau clients S^k (nice sampling); each i in S^k sets w_i = x^{k+1},
    H_i = C_{H_i, grad^2 f_i(w_i^old)}(grad^2 f_i(x^{k+1})), recomputes l_i and g_i, and sends the
    changes of H_i (its 3PC message), l_i (one float) and g_i (d floats). The server adds
    (1/n) sum_{i in S} of them. Option 2 only (the method needs l_i), so every sampled client
    computes its Hessian, also with ``bag``. With tau = n and the identity compressor this is
    Newton's method. A stepsize gamma != 1 damps: x+ = x + gamma ((H + l I)^{-1} g - x).
    """

    name = "newton_3pc_pp"
    stepsize_source = "reading"
    paper = ("Islamov, Qian, Hanzely, Safaryan, Richtárik (2022), Distributed Newton-type methods with "
             "communication compression and Bernoulli aggregation, Newton-3PC with partial participation")
    uses = ("compressor", "sampler")
    Params = NewtonPPParams
    state = ("x", "g", "H", "H_i", "Y", "l", "l_i", "all", "pack", "W", "G_i")

    def check(self):
        s = self.sampler
        if s is not None and not s.is_full and not isinstance(s, Nice):
            raise ValueError(f"newton_3pc_pp samples tau clients uniformly: use sampler {{name: nice, tau: ...}}, "
                             f"got {s.describe()}")
        super().check()

    def _g_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """g_i = (H_i + l_i I) w_i - grad f_i(w_i) for the clients ``rows``."""
        idx, cl = self._rows(rows)
        W = self.W[idx]
        Hw = torch.bmm(self.pack.unpack(self.H_i[idx]), W.unsqueeze(-1)).squeeze(-1)
        return Hw + self.l_i[idx, None] * W - self.problem.grads(W, clients=cl)

    def init(self, x0):
        dev = self.problem.device
        self.pack = SymPacking(self.d, self.problem.dtype, dev)
        self.all = torch.arange(self.n, device=dev)
        self.x = x0
        self.W = x0.expand(self.n, self.d).clone()
        X0 = self._hessians(x0, self.all)
        self._init_hessian_state(X0)
        self._send_l(X0, self.all)
        self.G_i = self._g_rows(self.all)
        self.g = self.channel.uplink(self.G_i)

    def step(self):
        x_new = torch.linalg.solve(self._matrix(self.H, self.l), self.g)
        x_new = self.x + self.gamma * (x_new - self.x) if self.gamma != 1.0 else x_new
        S = self.sample_clients().to(self.problem.device) if self.sampler is not None else self.all
        self.x = self.channel.broadcast(x_new, clients=S)
        self.W[S] = self.x
        X = self._learn(self.x, S)
        self._send_l(X, S)
        new = self._g_rows(S)
        delta = new - self.G_i[S]
        self.G_i[S] = new
        self.g = self.g + self.channel.uplink(delta, clients=S, weights=self._weights(S.shape[0]))
