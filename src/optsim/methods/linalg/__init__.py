"""Randomized solvers of linear systems: sketch-and-project (S1, :mod:`.sketch_project`), its accelerated
variant (S2 in part, :mod:`.accelerated`), primal-dual fixed-point methods for ridge regression with
SciPy's CG as baseline (S3, :mod:`.ridge_fixed_point`) and Parallel Stochastic Newton (S4, :mod:`.psn`).

These are functional, batched solvers of a :class:`~optsim.problems.linear_system.LinearSystem` (or
:class:`~optsim.problems.linear_system.RidgeSystem`), not round-based methods of the runner: they read
rows or columns of A, communicate nothing, and their theory (exact expected iterates, rates) is checked
over many independent runs with independent sketches, batched as one tensor computation (see
:mod:`optsim.problems.linear_system` and docs/architecture.md for why).
"""
from .accelerated import AcceleratedSketchAndProject, acceleration_parameters
from .psn import ParallelStochasticNewton
from .ridge_fixed_point import conjugate_gradients, fixed_point
from .sketch_project import (
                             ColumnSketch,
                             GaussianSketch,
                             IndexSketch,
                             Runs,
                             SketchAndProject,
                             cd_least_squares,
                             coordinate_descent,
                             gaussian_kaczmarz,
                             kaczmarz,
                             randomized_newton,
)

__all__ = ["AcceleratedSketchAndProject", "ColumnSketch", "GaussianSketch", "IndexSketch", "ParallelStochasticNewton",
           "Runs", "SketchAndProject", "acceleration_parameters", "cd_least_squares", "conjugate_gradients",
           "coordinate_descent", "fixed_point", "gaussian_kaczmarz", "kaczmarz", "randomized_newton"]
