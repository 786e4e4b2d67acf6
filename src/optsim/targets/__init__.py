"""Target densities ``pi ∝ exp(-F)`` for sampling, with ground truth, and distances between
distributions (layer: problems). Particles and chains are a batch dimension: every target is
evaluated on (k, d) batches; federated targets give all clients' gradients at once (n, k, d)."""
from .base import ClientTarget, Target
from .constrained import Dirichlet, TruncatedGaussianBox
from .gaussian import Gaussian, GaussianClients, GaussianMixture
from .kernels import (
                      IMQ,
                      RBF,
                      Linear,
                      make_kernel,
                      median_sq_distance,
                      sq_distances,
                      stein_kernel_matrix,
)
from .logistic import BayesianLogistic
from .metrics import (
                      gaussian_kl,
                      gaussian_mmd2,
                      gaussian_w2,
                      ksd,
                      mmd2,
                      moment_errors,
                      sample_cov,
                      w2_particles,
)
from .reference import mala

__all__ = [
                      "IMQ",
                      "RBF",
                      "BayesianLogistic",
                      "ClientTarget",
                      "Dirichlet",
                      "Gaussian",
                      "GaussianClients",
                      "GaussianMixture",
                      "Linear",
                      "Target",
                      "TruncatedGaussianBox",
                      "gaussian_kl",
                      "gaussian_mmd2",
                      "gaussian_w2",
                      "ksd",
                      "make_kernel",
                      "mala",
                      "median_sq_distance",
                      "mmd2",
                      "moment_errors",
                      "sample_cov",
                      "sq_distances",
                      "stein_kernel_matrix",
                      "w2_particles",
]
