"""Riemannian manifolds for Riemannian optimization: points and tangent vectors as flat ambient
vectors, batched over any leading dimensions.

A :class:`Manifold` gives the exponential map and its inverse, exact parallel transport along
geodesics, the metric, the distance, the orthogonal projection onto a tangent space, and the curvature
constant zeta of Zhang & Sra (2016) that the Riemannian methods' theorems use:

* :class:`Euclidean` -- R^d (Exp_x(u) = x + u, transport = identity): every Riemannian method is its
  Euclidean counterpart on it;
* :class:`Sphere` -- the unit sphere S^{d-1} in R^d with the round metric (great circles);
* :class:`SPD` -- symmetric positive definite k x k matrices with the affine-invariant metric
  <U, V>_X = tr(X^{-1} U X^{-1} V), flattened to k^2 entries;
* :class:`Stiefel` -- orthonormal n x p frames with the embedded metric, flattened to n p entries; it has
  no closed-form logarithm or parallel transport, so its ``exp`` / ``log`` / ``transport`` are the polar
  retraction, its exact inverse and the projection vector transport (``exact_maps = False``).

Why not geoopt: ``geoopt`` (0.5.1) installs next to the project's torch, but its sphere's ``transp``
is a projection onto the new tangent space (a vector transport), not parallel transport, and the
theorems of the loopless Riemannian methods (R-LSVRG, R-PAGE, R-MARINA) are stated with parallel
transport along geodesics (an isometry). The closed forms needed here are short (sphere: rotations in
the plane of x and u; SPD: congruences by matrix square roots and exponentials computed with one
batched ``eigh``), so they are written here, depend on torch only and are tested against their
defining properties (tests/test_riemannian.py).
"""
from .base import Euclidean, Manifold, curvature_zeta
from .spd import SPD
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = ["SPD", "Euclidean", "Manifold", "Sphere", "Stiefel", "curvature_zeta"]
