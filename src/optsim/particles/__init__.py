"""Particle samplers over (N, d) particle tensors: SVGD, beta-SVGD (P1), mirrored SVGD (P2).

Not :class:`optsim.methods.Method` s (see :mod:`optsim.particles.base` for why): standalone
algorithms on the targets of :mod:`optsim.targets`, with their own run loop into a Trace."""
from .base import ParticleSampler, run_particles
from .beta_svgd import BetaSVGD, kernel_importance_weights
from .mirrored import (
           EntropicBox,
           EntropicSimplex,
           EuclideanMirror,
           MirroredSVGD,
           MirrorMap,
)
from .svgd import SVGD, svgd_direction

__all__ = [
           "SVGD",
           "BetaSVGD",
           "EntropicBox",
           "EntropicSimplex",
           "EuclideanMirror",
           "MirrorMap",
           "MirroredSVGD",
           "ParticleSampler",
           "kernel_importance_weights",
           "run_particles",
           "svgd_direction",
]
