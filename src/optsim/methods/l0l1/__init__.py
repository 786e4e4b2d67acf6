"""Gradient methods for convex (L0, L1)-smooth problems (S7): ||hess f(x)|| <= L0 + L1 ||grad f(x)||.

* :mod:`.gd` -- ``l0l1_gd`` (gradient descent with smoothed clipping, eta / (L0 + L1 ||grad f||)),
  ``polyak_gd`` (Polyak stepsizes), ``adgd`` (adaptive GD of Malitsky and Mishchenko).
"""
from .gd import L0L1GD, AdGD, PolyakGD, l0l1_constants

__all__ = ["L0L1GD", "AdGD", "PolyakGD", "l0l1_constants"]
