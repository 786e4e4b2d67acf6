"""Riemannian stochastic methods (paper S10): R-SGD, R-SVRG (the loop baseline), and the loopless
R-LSVRG, R-PAGE and R-MARINA of Demidovich, Malinovsky, Richtárik (2024).

Points are the flat (d,) vectors the runner sees; the problem supplies the manifold
(``problem.manifold``, :mod:`optsim.manifolds`; None: R^d, where each method is its Euclidean
counterpart) and its oracles return Riemannian gradients. Steps are exponential maps, and gradients
computed at different points are combined after exact parallel transport.
"""
from .base import manifold_of
from .loop import RSGD, RSVRG
from .loopless import RLSVRG, RPAGE
from .marina import RMARINA

__all__ = ["RLSVRG", "RMARINA", "RPAGE", "RSGD", "RSVRG", "manifold_of"]
