"""Objectives with batched per-client oracles and exact constants."""
from .base import Problem, Reshuffler, SOLVE_TOL, cache_dir
from .glm import GLMProblem, LeastSquares, LogisticRegression, NonconvexLogisticRegression
from .quadratic import Quadratic
from .l0l1 import CoshProblem
from .neural import Layout, NeuralProblem
from .stochastic_quadratic import StochasticQuadratic
from .sketched import DiagonalSketch, SketchedProblem

#: Problem kinds by config name.
PROBLEMS = {c.name: c for c in (LogisticRegression, NonconvexLogisticRegression, LeastSquares, Quadratic, NeuralProblem)}
PROBLEMS[CoshProblem.name] = CoshProblem  # (L0, L1)-smooth test problem (built in code, not from YAML)
from .linear_system import LinearSystem  # noqa: E402

PROBLEMS[LinearSystem.name] = LinearSystem  # consistent A x = b (config name linear_system)

__all__ = ["Problem", "Reshuffler", "SOLVE_TOL", "cache_dir", "GLMProblem", "LeastSquares",
           "LogisticRegression", "NonconvexLogisticRegression", "Quadratic", "StochasticQuadratic", "PROBLEMS", "Layout",
           "NeuralProblem", "LinearSystem", "DiagonalSketch", "SketchedProblem"]
