"""Clipped stochastic methods for heavy-tailed noise (S5): ``clipped_sgd``, ``clipped_sstm`` (:mod:`.clipped`);
for variational inequalities ``clipped_seg`` and ``clipped_sgda`` with their batched step functions (:mod:`.vi`).
Composite and distributed problems (S6): ``prox_clipped_sgd`` (naive) and ``prox_clipped_sgd_shift`` (clipping of
gradient differences with learned shifts, :mod:`.shifted`), and for VIs ``prox_clipped_sgda_shift`` and
``prox_clipped_seg_shift`` with the shifted batched steps (:mod:`.vi`)."""
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
from .shifted import ProxClippedSGD, ProxClippedSGDShift, shifted_clip_step
from .vi import (
    ClippedSEG,
    ClippedSGDA,
    ProxClippedSEGShift,
    ProxClippedSGDAShift,
    clipped_seg_step,
    clipped_sgda_step,
    run_vi,
    run_vi_shifted,
    shifted_seg_step,
    shifted_sgda_step,
)

__all__ = [
    "ClippedSEG",
    "ClippedSGD",
    "ClippedSGDA",
    "ClippedSSTM",
    "ProxClippedSEGShift",
    "ProxClippedSGD",
    "ProxClippedSGDAShift",
    "ProxClippedSGDShift",
    "clip_rows",
    "clipped_seg_step",
    "clipped_sgd_parameters",
    "clipped_sgd_step",
    "clipped_sgda_step",
    "run_vi",
    "run_vi_shifted",
    "shifted_clip_step",
    "shifted_seg_step",
    "shifted_sgda_step",
    "sstm_coefficient",
    "sstm_point",
    "sstm_update",
]
