"""Randomized solvers of linear systems: sketch-and-project (S1, :mod:`.sketch_project`), its accelerated
variant (S2, :mod:`.accelerated`), stochastic matrix inversion and its accelerated version (S2,
:mod:`.matrix_inversion`), BFGS and accelerated BFGS in a full-batch optimizer (S2, :mod:`.bfgs`),
sparse systems read row by row (:mod:`.sparse`), S1's optimal sketch probabilities by a semidefinite
program (:mod:`.optimal_probabilities`, optional cvxpy), primal-dual fixed-point methods for ridge regression with
SciPy's CG as baseline (S3, :mod:`.ridge_fixed_point`) and Parallel Stochastic Newton (S4, :mod:`.psn`).

These are functional, batched solvers of a :class:`~optsim.problems.linear_system.LinearSystem` (or
:class:`~optsim.problems.linear_system.RidgeSystem`), not round-based methods of the runner: they read
rows or columns of A, communicate nothing, and their theory (exact expected iterates, rates) is checked
over many independent runs with independent sketches, batched as one tensor computation (see
:mod:`optsim.problems.linear_system` and docs/architecture.md for why).
"""
from .accelerated import AcceleratedSketchAndProject, acceleration_parameters
from .matrix_inversion import AcceleratedMatrixInversion, MatrixInversion
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
from .sparse import SparseSketchAndProject, sparse_cd_least_squares, sparse_kaczmarz

__all__ = ["AcceleratedMatrixInversion", "AcceleratedSketchAndProject", "ColumnSketch", "GaussianSketch", "IndexSketch",
           "MatrixInversion", "ParallelStochasticNewton", "Runs", "SketchAndProject", "SparseSketchAndProject",
           "acceleration_parameters", "cd_least_squares", "conjugate_gradients", "coordinate_descent", "fixed_point",
           "gaussian_kaczmarz", "kaczmarz", "randomized_newton", "sparse_cd_least_squares", "sparse_kaczmarz"]
