"""Federated Langevin samplers over many chains at once: the unadjusted Langevin algorithm and its
plainly compressed version (baselines), Langevin-MARINA (P3) and ELF (P4: P-ELF, D-ELF, B-ELF).
Standalone algorithms on client-split targets (:class:`optsim.targets.ClientTarget`) that
communicate through the project's channel and compressors (see :mod:`.base` for why they are not
registered :class:`optsim.methods.Method` s)."""
from .base import FederatedLangevin, run_langevin
from .elf import ELF
from .marina import LangevinMARINA
from .ula import ULA, CompressedULA

__all__ = ["ELF", "ULA", "CompressedULA", "FederatedLangevin", "LangevinMARINA", "run_langevin"]
