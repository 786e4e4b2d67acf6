"""Zeroth-order methods: only (possibly noisy, minibatch) function values, counted as ``func_evals``.

* :mod:`.directions` -- search-direction laws with their exact constants mu_D;
* :mod:`.stp` -- ``stp`` (stochastic three points) and ``mistp`` (minibatch STP), plus batched
  functional forms over independent runs;
* :mod:`.finite_difference` -- ``rsgf``, ``zo_svrg`` and ``zo_cd``, the finite-difference baselines of the MiSTP paper.
"""
from .directions import DIRECTIONS, mu_D, norm_D, sample_directions
from .finite_difference import (
    RSGF,
    ZOCD,
    ZOSVRG,
    rand_grad,
    rsgf_step,
    zo_cd_step,
    zo_svrg_step,
)
from .stp import STP, MiSTP, batch_values, draw_batches, run_stp, stp_step, three_points

__all__ = ["DIRECTIONS", "RSGF", "STP", "ZOCD", "ZOSVRG", "MiSTP", "batch_values", "draw_batches", "mu_D", "norm_D",
           "rand_grad", "rsgf_step", "run_stp", "sample_directions", "stp_step", "three_points", "zo_cd_step",
           "zo_svrg_step"]
