"""Standalone ``torch.optim.Optimizer``s of the LMO / Muon family and adaptive-stepsize SGD.

Usable in any PyTorch training loop (param groups, ``state_dict``/``load_state_dict``, CPU or CUDA
tensors) and inside the simulator. Each class cites its paper in its docstring; where a paper's
exact update could not be confirmed the docstring says so.

* ``lmo``: LMOs over norm balls (spectral, sign/l-infinity, l2, colnorm, rownorm, l1), dual and
  primal norms, the batched Newton–Schulz orthogonalization, helpers that batch layers by shape.
* ``muon``: ``Muon`` (torch.optim.Muon's definition, batched), ``DistanceAdaptiveMuon``,
  ``ScaleCalibratedMuon``, ``DistanceFreeMuon``.
* ``gluon``: ``Scion``, ``Gluon``, ``GluonMVR`` (three variants), ``LMOHessianCorrected``.
* ``local_lmo``: the local LMO of R^d, affine sets, l2 balls, boxes and the simplex; ``LocalLMO``.
* ``adaptive``: ``StoPS``, ``StoP``, ``GraDS``, ``GraD``.
* ``microadam``: ``MicroAdam`` (Top-K window + 4-bit error feedback; ``optimizer_state_bytes``).
* ``progressive``: ``RPT`` (randomized progressive training), ``RCD`` (block coordinate descent).
* ``mast``: ``MAST`` (Double Sketched SGD: masks on the weights in the forward/backward pass).
* ``lora``: ``LoRA``, ``AsymmetricLoRA``, ``ChainOfLoRA``, ``RACLoRA`` (adapters on 2-D weights; the
  projection view of a RAC-LoRA link).

``OPTIMIZERS`` maps a lower-case name to each class, ``PAPERS`` the name to its paper.
"""
from __future__ import annotations

from .adaptive import GraD, GraDS, StoP, StoPS, per_sample_grads
from .gluon import Gluon, GluonMVR, LMOHessianCorrected, Scion
from .lmo import (
    CUBIC_NS_COEFFICIENTS,
    LMOS,
    MATRIX_NORMS,
    MUON_NS_COEFFICIENTS,
    VECTOR_NORMS,
    apply_batched,
    apply_lmo,
    dual_norm,
    lmo_colnorm,
    lmo_l1,
    lmo_l2,
    lmo_many,
    lmo_rownorm,
    lmo_sign,
    lmo_spectral,
    newton_schulz,
    norm_many,
    ns_scalar_map,
    primal_norm,
)
from .local_lmo import (
    LocalLMO,
    local_lmo_affine,
    local_lmo_box,
    local_lmo_l2_ball,
    local_lmo_simplex,
    local_lmo_unconstrained,
    project_simplex,
)
from .lora import AsymmetricLoRA, ChainOfLoRA, LoRA, LoRAChain, RACLoRA
from .mast import MAST
from .microadam import MicroAdam, dequantize_4bit, quantize_4bit
from .muon import DistanceAdaptiveMuon, DistanceFreeMuon, Muon, ScaleCalibratedMuon
from .progressive import RCD, RPT

#: name -> optimizer class.
OPTIMIZERS: dict[str, type] = {
    "muon": Muon,
    "distance_adaptive_muon": DistanceAdaptiveMuon,
    "scale_calibrated_muon": ScaleCalibratedMuon,
    "distance_free_muon": DistanceFreeMuon,
    "scion": Scion,
    "gluon": Gluon,
    "gluon_mvr": GluonMVR,
    "lmo_hcm": LMOHessianCorrected,
    "local_lmo": LocalLMO,
    "stops": StoPS,
    "stop": StoP,
    "grads": GraDS,
    "grad": GraD,
    "microadam": MicroAdam,
    "rpt": RPT,
    "rcd": RCD,
    "lora": LoRA,
    "asymmetric_lora": AsymmetricLoRA,
    "chain_of_lora": ChainOfLoRA,
    "rac_lora": RACLoRA,
    "mast": MAST,
}

#: name -> the paper of its update rule (shown by ``optsim list optimizers``; each class's docstring
#: cites it in full).
PAPERS: dict[str, str] = {
    "muon": "Jordan et al. 2024 (blog); Liu et al. 2025, arXiv:2502.16982",
    "distance_adaptive_muon": "Demidovich et al. 2026, arXiv:2605.18999",
    "scale_calibrated_muon": "Demidovich et al. 2026, arXiv:2605.18999",
    "distance_free_muon": "Demidovich et al. 2026, arXiv:2605.18999",
    "scion": "Pethick et al. 2025, arXiv:2502.07529",
    "gluon": "Riabinin et al. 2025, arXiv:2505.13416, Alg. 1",
    "gluon_mvr": "Qian et al. 2025, arXiv:2512.16598",
    "lmo_hcm": "Khirirat et al. 2025, arXiv:2512.13227",
    "local_lmo": "Richtárik et al. 2026, arXiv:2605.08850",
    "stops": "Horváth et al. 2022, arXiv:2208.05287",
    "stop": "Horváth et al. 2022, arXiv:2208.05287",
    "grads": "Horváth et al. 2022, arXiv:2208.05287",
    "grad": "Horváth et al. 2022, arXiv:2208.05287",
    "microadam": "Modoranu et al. 2024, arXiv:2405.15593, Alg. 1",
    "rpt": "Szlendak et al. 2023, arXiv:2306.03626",
    "rcd": "Szlendak et al. 2023, arXiv:2306.03626; Richtárik & Takáč 2014, arXiv:1107.2848",
    "lora": "Hu et al. 2022, arXiv:2106.09685",
    "asymmetric_lora": "Zhu et al. 2024, arXiv:2402.16842",
    "chain_of_lora": "Xia et al. 2024, arXiv:2401.04151",
    "rac_lora": "Malinovsky et al. 2024, arXiv:2410.08305, Alg. 1",
    "mast": "Demidovich et al. 2023, arXiv:2311.16086, Alg. 1",
}

__all__ = [
    "OPTIMIZERS", "PAPERS",
    "Muon", "DistanceAdaptiveMuon", "ScaleCalibratedMuon", "DistanceFreeMuon",
    "Scion", "Gluon", "GluonMVR", "LMOHessianCorrected",
    "LocalLMO", "StoPS", "StoP", "GraDS", "GraD", "MicroAdam", "quantize_4bit", "dequantize_4bit", "RPT", "RCD",
    "LoRA", "AsymmetricLoRA", "ChainOfLoRA", "LoRAChain", "RACLoRA", "MAST",
    "newton_schulz", "ns_scalar_map", "MUON_NS_COEFFICIENTS", "CUBIC_NS_COEFFICIENTS",
    "apply_lmo", "lmo_l2", "lmo_sign", "lmo_l1", "lmo_spectral", "lmo_colnorm", "lmo_rownorm",
    "LMOS", "VECTOR_NORMS", "MATRIX_NORMS", "dual_norm", "primal_norm", "lmo_many", "norm_many", "apply_batched",
    "local_lmo_unconstrained", "local_lmo_affine", "local_lmo_l2_ball", "local_lmo_box", "local_lmo_simplex",
    "project_simplex", "per_sample_grads",
]
