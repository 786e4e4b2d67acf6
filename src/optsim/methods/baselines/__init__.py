"""Baselines (PAPERS.md: the methods every family compares against).

* :mod:`.gd` -- ``gd``, ``sgd`` (distributed minibatch SGD with client sampling);
* :mod:`.compressed` -- ``dcgd``, ``diana`` (unbiased compression; learned shifts);
* :mod:`.error_feedback` -- ``ef``, ``ef21`` (+ partial participation), ``ef21_bc``, ``ef21_p``;
* :mod:`.variance_reduced` -- ``marina`` (+ PP-MARINA), ``page``.
"""
from .compressed import DCGD, DIANA
from .error_feedback import EF, EF21, EF21BC, EF21P, ef21_pp_stepsize, ef21_stepsize, ef21_theta_beta
from .gd import GD, SGD, sgd_expected_smoothness
from .variance_reduced import MARINA, PAGE

__all__ = ["GD", "SGD", "DCGD", "DIANA", "EF", "EF21", "EF21BC", "EF21P", "MARINA", "PAGE", "sgd_expected_smoothness",
           "ef21_stepsize", "ef21_pp_stepsize", "ef21_theta_beta"]
