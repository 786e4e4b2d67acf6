"""Clipped stochastic methods for heavy-tailed noise (S5): ``clipped_sgd``, ``clipped_sstm`` (:mod:`.clipped`);
clipped-SEG and clipped-SGDA step functions for variational inequalities (:mod:`.vi`)."""
from .clipped import (
    ClippedSGD,
    ClippedSSTM,
    clip_rows,
    clipped_sgd_parameters,
    clipped_sgd_step,
    sstm_coefficient,
    sstm_point,
    sstm_update,
)
from .vi import clipped_seg_step, clipped_sgda_step, run_vi

__all__ = [
    "ClippedSGD",
    "ClippedSSTM",
    "clip_rows",
    "clipped_seg_step",
    "clipped_sgd_parameters",
    "clipped_sgd_step",
    "clipped_sgda_step",
    "run_vi",
    "sstm_coefficient",
    "sstm_point",
    "sstm_update",
]
