"""Sparsified and low-rank training as sketched optimization (PAPERS.md M8, M7).

* :mod:`.mast` -- ``mast``: Double Sketched (S)GD of MAST (Demidovich, Malinovsky, Shulgin,
  Richtárik, arXiv 2311.16086), single-node and distributed, with its loopless variance-reduced
  variant, on the sketched objective of :mod:`optsim.problems.sketched`;
* :mod:`.fed_rac_lora` -- ``fed_rac_lora``: federated RAC-LoRA (Malinovsky et al., arXiv 2410.08305),
  one chain link per round on a shared random frozen factor.
"""
from .fed_rac_lora import FedRACLoRA, FedRACLoRAParams
from .mast import MAST, MASTParams

__all__ = ["MAST", "FedRACLoRA", "FedRACLoRAParams", "MASTParams"]
