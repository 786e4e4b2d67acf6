"""Fed-RAC-LoRA: federated Randomized Asymmetric Chain of LoRA (Malinovsky et al., arXiv 2410.08305).

The model x (d,) is viewed as one weight matrix W (m x n), m n = d (``shape``). A round is one link
of the chain, run by all clients on a shared frozen factor:

1. a random frozen factor is drawn from the round's shared seed (every party draws the same, so
   nothing is sent): ``B_S`` (m x r, ``side: left``) or ``A_S`` (r x n, ``side: right``);
2. client i starts its trainable factor at zero (A_i = 0, resp. B_i = 0: the link starts at W^t) and
   takes ``local_steps`` gradient steps on it against its own loss f_i(W^t + B_S A_i)
   (resp. f_i(W^t + B_i A_S)), each preconditioned by (B_S^T B_S)^+ (resp. (A_S A_S^T)^+) when
   ``precondition`` is on, so that a step is the projected step W <- W - gamma H grad f_i(W) inside
   the link's subspace (``optsim.optim.lora``, module docstring);
3. client i sends its trained factor (r n floats, resp. m r), the server averages them and
   broadcasts the average (the same count down), and every party merges W^{t+1} = W^t + B_S A
   (resp. W^t + B A_S).

With one local step and ``precondition`` the round is exactly RAC-LoRA's projected step on f,
W^{t+1} = W^t - gamma H_B grad f(W^t) (resp. - gamma grad f(W^t) H_A), since the projection is linear:
the single-node RAC-LoRA optimizer (:class:`optsim.optim.RACLoRA` with ``train="A"``,
``precondition=True``, ``chain=1``) is the one-client case (tested). For a Gaussian factor
E[H] = (r/k) I, so with gamma = 1/L and mu-strong convexity E[f - f*] contracts by
1 - mu r / (L k) per round (k = m left, n right; ``optsim.optim.lora.rac_lora_rate``).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import PositiveInt

from ...optim.lora import sample_factor
from ..base import Method, MethodParams, register_method

__all__ = ["FedRACLoRA", "FedRACLoRAParams"]


class FedRACLoRAParams(MethodParams):
    #: the adapter's rank r (at most m for the left sketch, n for the right one)
    rank: PositiveInt = 1
    #: local steps on the trainable factor per round (per link)
    local_steps: PositiveInt = 1
    #: which factor is frozen and random: left (B_S, A trained) or right (A_S, B trained)
    side: Literal["left", "right"] = "left"
    #: the matrix view (m, n) of the model, m n = d (default: m the largest divisor of d <= sqrt(d))
    shape: tuple[PositiveInt, PositiveInt] | None = None
    #: precondition the factor's steps so that each is a projected gradient step in W (the theory form)
    precondition: bool = True


def _default_shape(d: int) -> tuple[int, int]:
    m = max(k for k in range(1, math.isqrt(d) + 1) if d % k == 0)
    return m, d // m


@register_method
class FedRACLoRA(Method):
    """Fed-RAC-LoRA (module docstring): a RAC-LoRA link per round, local factor training, averaging, merge.

    Malinovsky, Michieli, Hammoud, Ceritli, Elesedy, Ozay, Richtárik (2024), "Randomized Asymmetric
    Chain of LoRA: The First Meaningful Theoretical Framework for Low-Rank Adaptation", arXiv:2410.08305
    (federated learning version: "...for Federated Learning", ICML 2025 TTODLer-FM workshop).
    The paper states a federated variant (Fed-RAC-LoRA, its Algorithm 2, and a convergence analysis
    for the federated setting); its text could not be read, so the round above follows the project's
    research notes (a shared sampled frozen factor, local training of the other factor from zero,
    averaging, merge): the local-step schedule, how the sketch is seeded and the theorem's stepsize are
    unconfirmed. Gaussian frozen factors with standard deviation 1/r, the adapter scale alpha / r = 1.

    Default stepsize (``derived``, needs ``precondition``): gamma = 1/L with one local step (the
    round is then RAC-LoRA's projected step on f, Algorithm 1's theory form with its
    1 - mu r/(L k) contraction); gamma = 1/(local_steps L_max) with several (ours: the clients' local
    projected steps are local gradient descent within the link's subspace, for which this keeps the
    drift of H steps at most one 1/L_max step's worth; not a theorem of the paper). Without
    ``precondition`` the step in W depends on the drawn factor's scale: set ``stepsize``.
    """

    name = "fed_rac_lora"
    stepsize_source = "derived"
    paper = ("Malinovsky, Michieli, Hammoud, Ceritli, Elesedy, Ozay, Richtárik (2024), Randomized Asymmetric Chain "
             "of LoRA, arXiv 2410.08305, Alg. 2 (Fed-RAC-LoRA; details unconfirmed)")
    Params = FedRACLoRAParams

    def check(self):
        pr, d = self.params, self.d
        m, n = pr.shape if pr.shape is not None else _default_shape(d)
        if m * n != d:
            raise ValueError(f"fed_rac_lora: shape {m} x {n} has {m * n} entries, the model {d}: give shape with m n = {d}")
        k = m if pr.side == "left" else n
        if pr.rank > k:
            raise ValueError(f"fed_rac_lora: rank {pr.rank} exceeds the sketched side's size {k} (shape {m} x {n}, "
                             f"side {pr.side}): give rank <= {k}")
        self.m_rows, self.n_cols = m, n

    def theory_stepsize(self):
        if not self.params.precondition:
            raise NotImplementedError("fed_rac_lora: without precondition the theory stepsize depends on the drawn "
                                      "factor: set 'stepsize'")
        if self.params.local_steps == 1:
            return 1.0 / self.problem.L
        return 1.0 / (self.params.local_steps * self.problem.L_max)

    def init(self, x0):
        self.x = self.channel.broadcast(x0)  # every client starts from W^0

    def step(self):
        pr, gamma = self.params, self.gamma
        m, n, r, c = self.m_rows, self.n_cols, pr.rank, self.n
        W = self.x.reshape(m, n)
        left = pr.side == "left"
        F = sample_factor((m, r) if left else (r, n), pr.side, "gaussian", self.ctx.generator("method"),
                          dtype=self.x.dtype, device=self.x.device)
        P = torch.linalg.pinv(F.T @ F if left else F @ F.T) if pr.precondition else None
        T = self.x.new_zeros((c, r, n) if left else (c, m, r))  # the clients' trainable factors, from zero
        for _ in range(pr.local_steps):
            Wi = W + (F @ T if left else T @ F)
            G = self.problem.grads(Wi.reshape(c, self.d)).reshape(c, m, n)
            g = F.T @ G if left else G @ F.T
            if P is not None:
                g = P @ g if left else g @ P
            T = T - gamma * g
        mean = self.channel.uplink(self.channel.dense(T.reshape(c, -1)))
        mean = self.channel.broadcast(self.channel.dense(mean.reshape(1, -1))).reshape(T.shape[1:])
        self.x = (W + (F @ mean if left else mean @ F)).reshape(self.d)
