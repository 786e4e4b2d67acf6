"""Gradient methods for convex (L0, L1)-smooth problems (S7): ||hess f(x)|| <= L0 + L1 ||grad f(x)||.

* :mod:`.gd` -- ``l0l1_gd`` (gradient descent with smoothed clipping, eta / (L0 + L1 ||grad f||)),
  ``polyak_gd`` (Polyak stepsizes), ``adgd`` (adaptive GD of Malitsky and Mishchenko).
* :mod:`.stm` -- ``l0l1_stm`` (the similar-triangles method with L_eff = L0 exp(L1 ||x0 - x*||), our derivation).
"""
from .gd import L0L1GD, AdGD, PolyakGD, l0l1_constants
from .stm import L0L1STM, stm_effective_smoothness

__all__ = ["L0L1GD", "L0L1STM", "AdGD", "PolyakGD", "l0l1_constants", "stm_effective_smoothness"]
