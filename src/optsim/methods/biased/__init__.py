"""SGD with biased gradient estimators (S9): ``biased_sgd`` (:mod:`.biased_sgd`)."""
from .biased_sgd import BiasedSGD, independent_sampling

__all__ = ["BiasedSGD", "independent_sampling"]
