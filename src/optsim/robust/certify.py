"""Certified l2 robustness by randomized smoothing: CERTIFY and PREDICT of Cohen, Rosenfeld, Kolter
(2019), "Certified adversarial robustness via randomized smoothing", ICML (Section 3.2, its
pseudocode for CERTIFY and PREDICT), as used for federated models by Alfarra, Pérez, Shulgin,
Richtárik, Ghanem (2022), "Certified robustness in federated learning" (recipe B5).

A base classifier f maps an input to a class. Its smoothed classifier returns the class that f
picks most often under Gaussian input noise, g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0,
sigma^2 I). Cohen et al.'s Theorem 1: if the top class has probability at least p_A > 1/2, g
keeps its prediction within the l2 ball of radius sigma Phi^{-1}(p_A) around x (Phi: the standard
normal CDF). The probabilities are unknown; Monte Carlo estimates them:

* :func:`certify` (CERTIFY): ``n0`` noisy copies choose the candidate class c_hat (the most
  frequent one), ``n`` fresh copies count k = #{f = c_hat}; p_A is replaced by the one-sided
  (1 - alpha) Clopper-Pearson lower bound p_lower = Beta^{-1}(alpha; k, n - k + 1)
  (:func:`lower_confidence_bound`). If p_lower < 1/2 the input is abstained on (prediction
  ``ABSTAIN`` = -1, radius 0), else c_hat is returned with radius sigma Phi^{-1}(p_lower). With
  probability at least 1 - alpha (over the noise) a returned certificate is correct, i.e. g does
  predict c_hat everywhere in the ball. Choosing c_hat on separate draws is what keeps the bound
  valid (the class is not selected on the draws that test it).
* :func:`predict` (PREDICT): ``n`` copies, the two most frequent classes with counts n_A >= n_B,
  and the two-sided binomial test of n_A successes in n_A + n_B trials at 1/2; the top class is
  returned when its p-value is at most alpha, otherwise the input is abstained on. The
  probability of returning a class other than g(x) is then at most alpha.
* :func:`certified_accuracy`: the share of inputs whose prediction is correct and whose radius is
  at least r (abstentions count as wrong), for each r of a grid; :func:`average_certified_radius`
  is its integral over r >= 0 (the mean over inputs of the radius of correct predictions, 0
  otherwise).

Defaults are Cohen et al.'s: n0 = 100, n = 100,000, alpha = 0.001.

Batching. The noisy copies of several inputs go through the classifier together: the draws of
all inputs are laid out input-major (input 0's draws, then input 1's, ...) and cut into calls of
``batch_size`` rows (by default as many as fit ``max_bytes``), so one call may hold the end of one
input's draws and the start of the next; the counts of a call are one ``torch.bincount`` over
(input, class) pairs. No Python loop runs over draws or inputs, only over the calls.

Randomness. The noise comes from one ``torch.Generator`` (given, or seeded with ``seed``), never
from torch's global generator, and it is drawn in blocks of a fixed number of rows that depends
only on the input size (:func:`noise_block_rows`), in the same input-major order. A call takes
its rows from that stream (keeping the rest of a block for the next call), so the noise of draw j
of input i, and with it every count, prediction and radius, does not depend on ``batch_size`` or
``max_bytes`` for a fixed seed. The selection draws (n0) and the estimation draws (n) are two
consecutive streams of the same generator, each starting on a fresh block.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

__all__ = ["ABSTAIN", "certify", "predict", "sample_counts", "lower_confidence_bound", "binomial_p_value",
           "certified_accuracy", "average_certified_radius", "noise_block_rows"]

#: the prediction of an input the smoothed classifier abstains on
ABSTAIN = -1

#: default memory budget of one classifier call (the noisy inputs and their copy of X)
DEFAULT_MAX_BYTES = 64 * 2 ** 20

#: numbers per block of noise drawn at once (the block's rows follow from the input size)
_BLOCK_NUMBERS = 2 ** 16

Classifier = Callable[[torch.Tensor], torch.Tensor]


# ---- validation ----------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_draws(value, name: str, what: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 ({what}), got {value!r}")
    return int(value)


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)) or not (
            math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number (the smoothing noise's deviation), got {sigma!r}")
    return float(sigma)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1) (the certificate fails with probability at most alpha), "
                         f"got {alpha!r}")
    return float(alpha)


def _check_inputs(X) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or X.ndim < 1 or not X.is_floating_point():
        what = f"{X.dtype} tensor of shape {tuple(X.shape)}" if isinstance(X, torch.Tensor) else type(X).__name__
        raise ValueError(f"X must be a floating-point tensor (N, ...) with one input per row, got {what}")
    return X


def _rows_per_call(batch_size, max_bytes, X: torch.Tensor) -> int:
    if batch_size is not None:
        return _check_draws(batch_size, "batch_size", "rows per classifier call; None: from max_bytes")
    if not _is_int(max_bytes) or max_bytes < 1:
        raise ValueError(f"max_bytes must be an integer >= 1 (memory of one classifier call), got {max_bytes!r}")
    row = 2 * max(1, math.prod(X.shape[1:])) * X.element_size()
    return max(1, int(max_bytes) // row)


def _generator(generator: torch.Generator | None, seed: int, device: torch.device) -> torch.Generator:
    if generator is None:
        return torch.Generator(device=device).manual_seed(int(seed))
    if torch.device(generator.device).type != device.type:
        raise ValueError(f"generator is on {generator.device} but X is on {device}: pass a generator on {device}")
    return generator


# ---- the noise stream ------------------------------------------------------------------------------------
def noise_block_rows(sample_shape) -> int:
    """Rows of Gaussian noise drawn at once for inputs of ``sample_shape`` (about 65,536 numbers)."""
    return max(1, _BLOCK_NUMBERS // max(1, math.prod(sample_shape)))


class _NoiseStream:
    """Standard normal rows ``(*, *shape)`` drawn in fixed blocks of :func:`noise_block_rows` rows;
    :meth:`fill` hands out the next rows whatever their number (the rest of a block waits for the
    next call), so the sequence of rows does not depend on how it is cut."""

    def __init__(self, shape, dtype, device, generator: torch.Generator):
        self.shape, self.generator = tuple(shape), generator
        self.block = noise_block_rows(self.shape)
        self.buf = torch.empty((self.block, *self.shape), dtype=dtype, device=device)
        self.pos = self.block  # empty

    def fill(self, out: torch.Tensor) -> torch.Tensor:
        rows, done = out.shape[0], 0
        while done < rows:
            if self.pos == self.block and rows - done >= self.block:  # a whole block straight into out
                out[done:done + self.block].normal_(generator=self.generator)
                done += self.block
                continue
            if self.pos == self.block:
                self.buf.normal_(generator=self.generator)
                self.pos = 0
            k = min(rows - done, self.block - self.pos)
            out[done:done + k] = self.buf[self.pos:self.pos + k]
            self.pos += k
            done += k
        return out


# ---- counting the base classifier's votes -------------------------------------------------------------------
def _class_ids(out: torch.Tensor, rows: int) -> tuple[torch.Tensor, int]:
    """Class ids (rows,) from a classifier's logits (rows, C) or ids (rows,), and the number of
    classes they show (C, or one more than the largest id)."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the classifier must return a tensor of logits (rows, classes) or class ids (rows,), "
                         f"got {type(out).__name__}")
    if out.ndim == 2 and out.shape[0] == rows and out.is_floating_point():
        return out.argmax(1), out.shape[1]
    if out.ndim == 1 and out.shape[0] == rows and not out.is_floating_point() and not out.is_complex():
        ids = out.long()
        low, high = ids.aminmax()
        if int(low) < 0:
            raise ValueError(f"the classifier returned a negative class id ({int(low)}): ids must be >= 0")
        return ids, int(high) + 1
    raise ValueError(f"the classifier must return logits (rows, classes) or integer class ids (rows,) for {rows} rows, "
                     f"got a {out.dtype} tensor of shape {tuple(out.shape)}")


def _widen(counts: torch.Tensor, C: int) -> torch.Tensor:
    if counts.shape[1] >= C:
        return counts
    return torch.cat([counts, counts.new_zeros(counts.shape[0], C - counts.shape[1])], 1)


def sample_counts(classifier: nn.Module | Classifier, X: torch.Tensor, sigma: float, num: int, *,
                  batch_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                  generator: torch.Generator | None = None, seed: int = 0, num_classes: int | None = None
                  ) -> torch.Tensor:
    """How often the classifier picks each class on ``num`` noisy copies x + sigma eps of every input
    x of ``X`` (N, ...): an int64 tensor (N, C) on the CPU, C = ``num_classes``, else the number of
    logits, else one more than the largest class id seen.

    ``classifier``: a ``torch.nn.Module`` (run in eval mode, its mode restored afterwards) or any
    callable, taking a batch of inputs (rows, ...) on X's device and returning logits (rows, C) or
    class ids (rows,). One call sees ``batch_size`` rows (default: as many as fit ``max_bytes``,
    counting the noisy inputs and their copy of X, not the classifier's own activations). The
    noise does not depend on the batching (module docstring)."""
    X = _check_inputs(X)
    sigma = _check_sigma(sigma)
    num = _check_draws(num, "num", "noisy copies per input")
    if num_classes is not None:
        num_classes = _check_draws(num_classes, "num_classes", "classes of the classifier; None: inferred")
    rows_max = _rows_per_call(batch_size, max_bytes, X)
    g = _generator(generator, seed, X.device)
    N, shape = X.shape[0], tuple(X.shape[1:])
    counts = torch.zeros(N, num_classes or 0, dtype=torch.long, device=X.device)
    total = N * num
    if total == 0:
        return counts.cpu()
    stream = _NoiseStream(shape, X.dtype, X.device, g)
    rows_max = min(rows_max, total)
    buf = torch.empty((rows_max, *shape), dtype=X.dtype, device=X.device)
    module = classifier if isinstance(classifier, nn.Module) else None
    training = module is not None and module.training
    if training:
        module.eval()
    try:
        with torch.inference_mode():
            for s in range(0, total, rows_max):
                e = min(total, s + rows_max)
                batch = stream.fill(buf[:e - s])
                owner = torch.arange(s, e, device=X.device).floor_divide_(num)  # input of each row
                batch.mul_(sigma).add_(X.index_select(0, owner))
                ids, C = _class_ids(classifier(batch), e - s)
                if num_classes is not None and C > num_classes:
                    raise ValueError(f"the classifier shows {C} classes but num_classes is {num_classes}: "
                                     f"raise num_classes or leave it None")
                counts = _widen(counts, C)
                C = counts.shape[1]
                i0, i1 = s // num, (e - 1) // num + 1
                cell = (owner - i0).mul_(C).add_(ids.to(X.device))
                counts[i0:i1] += torch.bincount(cell, minlength=(i1 - i0) * C).view(i1 - i0, C)
    finally:
        if training:
            module.train()
    return counts.cpu()


# ---- statistics ------------------------------------------------------------------------------------------
def lower_confidence_bound(k, n, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial success probability after k
    successes in n trials: Beta^{-1}(alpha; k, n - k + 1), and 0 where k = 0 (float64, the shape of
    k). Cohen et al. (2019) use it for p_A in CERTIFY."""
    from scipy.stats import beta

    alpha = _check_alpha(alpha)
    k = np.asarray(k.cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64)
    n = np.asarray(n.cpu() if isinstance(n, torch.Tensor) else n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("successes k must satisfy 0 <= k <= n for every entry")
    safe = np.where(k > 0, k, 1.0)
    return np.where(k > 0, beta.ppf(alpha, safe, n - k + 1.0), 0.0)


def binomial_p_value(k, n) -> np.ndarray:
    """Two-sided p-value of k successes in n trials under success probability 1/2 (float64, the
    shape of k): min(1, 2 P(Bin(n, 1/2) <= min(k, n - k))). The null distribution is symmetric, so
    this equals ``scipy.stats.binomtest(k, n, 0.5).pvalue`` (tested), without a loop over entries."""
    from scipy.stats import binom

    k = np.asarray(k.cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64)
    n = np.asarray(n.cpu() if isinstance(n, torch.Tensor) else n, dtype=np.float64)
    return np.minimum(1.0, 2.0 * binom.cdf(np.minimum(k, n - k), n, 0.5))


# ---- CERTIFY and PREDICT -------------------------------------------------------------------------------
def certify(classifier: nn.Module | Classifier, X: torch.Tensor, sigma: float, n0: int = 100, n: int = 100_000,
            alpha: float = 0.001, *, batch_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
            generator: torch.Generator | None = None, seed: int = 0, num_classes: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen et al.'s CERTIFY for every input of ``X`` (N, ...): predictions (N,) int64 (``ABSTAIN``
    = -1 where p_lower < 1/2) and certified l2 radii (N,) float64 (0 where abstained), on the CPU.

    ``n0`` draws choose the class, ``n`` fresh draws bound its probability from below at confidence
    1 - ``alpha``; each returned radius sigma Phi^{-1}(p_lower) holds with probability at least 1 -
    alpha. ``batch_size`` / ``max_bytes`` / ``generator`` / ``seed`` / ``num_classes``: as in
    :func:`sample_counts` (the generator is used for both rounds of draws, n0 first)."""
    from scipy.stats import norm

    X = _check_inputs(X)
    sigma = _check_sigma(sigma)
    n0 = _check_draws(n0, "n0", "noisy copies that choose the class")
    n = _check_draws(n, "n", "noisy copies that bound its probability")
    alpha = _check_alpha(alpha)
    g = _generator(generator, seed, X.device)
    kw = dict(batch_size=batch_size, max_bytes=max_bytes, generator=g, num_classes=num_classes)
    chosen = sample_counts(classifier, X, sigma, n0, **kw).argmax(1)
    counts = sample_counts(classifier, X, sigma, n, **kw)
    counts = _widen(counts, int(chosen.max()) + 1 if chosen.numel() else 0)
    k = counts.gather(1, chosen[:, None]).squeeze(1) if chosen.numel() else chosen
    p = torch.from_numpy(np.atleast_1d(lower_confidence_bound(k.numpy(), n, alpha)))
    sure = p >= 0.5
    radii = torch.where(sure, sigma * torch.from_numpy(np.atleast_1d(norm.ppf(p.numpy()))), torch.zeros_like(p))
    predictions = torch.where(sure, chosen, torch.full_like(chosen, ABSTAIN))
    return predictions, radii.clamp_min(0.0)


def predict(classifier: nn.Module | Classifier, X: torch.Tensor, sigma: float, n: int = 100_000,
            alpha: float = 0.001, *, batch_size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
            generator: torch.Generator | None = None, seed: int = 0, num_classes: int | None = None
            ) -> torch.Tensor:
    """Cohen et al.'s PREDICT for every input of ``X`` (N, ...): the smoothed classifier's class
    (N,) int64 on the CPU, or ``ABSTAIN`` (-1) where the two-sided binomial test of the top two
    counts (n_A of n_A + n_B at 1/2) has a p-value above ``alpha``; the class returned differs from
    g(x) with probability at most alpha. Other arguments as in :func:`sample_counts`."""
    X = _check_inputs(X)
    sigma = _check_sigma(sigma)
    n = _check_draws(n, "n", "noisy copies per input")
    alpha = _check_alpha(alpha)
    counts = sample_counts(classifier, X, sigma, n, batch_size=batch_size, max_bytes=max_bytes,
                           generator=_generator(generator, seed, X.device), num_classes=num_classes)
    counts = _widen(counts, 2)
    top = counts.topk(2, dim=1)
    p = torch.from_numpy(np.atleast_1d(binomial_p_value(top.values[:, 0].numpy(),
                                                        top.values.sum(1).numpy())))
    return torch.where(p <= alpha, top.indices[:, 0], torch.full_like(top.indices[:, 0], ABSTAIN))


# ---- certified accuracy ----------------------------------------------------------------------------------
def _as_cpu(v, dtype) -> torch.Tensor:
    return torch.as_tensor(v.cpu() if isinstance(v, torch.Tensor) else np.asarray(v)).to(dtype)


def _correct(predictions, radii, labels) -> tuple[torch.Tensor, torch.Tensor]:
    pred, rad, lab = _as_cpu(predictions, torch.long), _as_cpu(radii, torch.float64), _as_cpu(labels, torch.long)
    if not (pred.ndim == rad.ndim == lab.ndim == 1 and pred.shape == rad.shape == lab.shape):
        raise ValueError(f"predictions, radii and labels must be vectors of one length, got shapes "
                         f"{tuple(pred.shape)}, {tuple(rad.shape)}, {tuple(lab.shape)}")
    return pred == lab, rad


def certified_accuracy(predictions, radii, labels, radii_grid) -> torch.Tensor:
    """Certified accuracy at each radius r of ``radii_grid``: the share of inputs whose prediction
    equals the label and whose certified radius is at least r (abstentions, -1, are wrong); float64
    (len(radii_grid),). Empty inputs give zeros."""
    correct, rad = _correct(predictions, radii, labels)
    grid = _as_cpu(radii_grid, torch.float64).reshape(-1)
    if not correct.numel():
        return torch.zeros_like(grid)
    return (correct[None, :] & (rad[None, :] >= grid[:, None])).to(torch.float64).mean(1)


def average_certified_radius(predictions, radii, labels) -> float:
    """The certified accuracy curve integrated over radii r >= 0: the mean over inputs of the
    certified radius where the prediction is correct and 0 elsewhere."""
    correct, rad = _correct(predictions, radii, labels)
    return float((rad * correct).mean()) if correct.numel() else 0.0
