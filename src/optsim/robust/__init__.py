"""Byzantine robustness: attacks, the threat model of a run, robust aggregators.

* :mod:`.attacks` -- what Byzantine clients send (ALIE, IPM, bit / sign flip, label flip, Gaussian,
  mimic, shift-back, inf, none);
* :mod:`.threat` -- which clients are Byzantine and how the channel applies their attack;
* :mod:`.aggregators` -- rules that combine the m received client vectors (m, d) into one vector
  while up to f of them are arbitrary, batched over the clients: ``mean``, ``cm`` (coordinate-wise
  median), ``tm`` (trimmed mean), ``gm`` (geometric median, RFA), ``krum``, ``multi_krum``, ``cc``
  (centered clipping, stateful), ``clip`` (static clipping then mean), and the pre-aggregators
  ``bucketing: s`` and ``nnm: true`` (nearest-neighbour mixing) composable with each
  (:func:`make_aggregator`);
* :mod:`.certify` -- certified l2 robustness of a classifier by randomized smoothing (Cohen et al.'s
  CERTIFY and PREDICT, batched over inputs and noise draws) and certified accuracy.
"""
from .aggregators import (AGGREGATORS, Aggregator, Bucketing, CenteredClipping, CoordinateMedian,
                          GeometricMedian, Krum, Mean, MultiKrum, NearestNeighborMixing, StaticClipping,
                          TrimmedMean, bucket_means, coordinate_median, make_aggregator,
                          nearest_neighbor_mixing, register_aggregator, trimmed_mean)
from .certify import (ABSTAIN, average_certified_radius, binomial_p_value, certified_accuracy, certify,
                      lower_confidence_bound, noise_block_rows, predict, sample_counts)
from .attacks import ATTACKS, Attack, alie_z, make_attack, register_attack
from .threat import Threat

__all__ = ["ATTACKS", "Attack", "alie_z", "make_attack", "register_attack", "Threat",
           "AGGREGATORS", "Aggregator", "Bucketing", "CenteredClipping", "CoordinateMedian", "GeometricMedian",
           "Krum", "Mean", "MultiKrum", "NearestNeighborMixing", "StaticClipping", "TrimmedMean", "bucket_means",
           "coordinate_median", "make_aggregator", "nearest_neighbor_mixing", "register_aggregator",
           "trimmed_mean", "ABSTAIN", "average_certified_radius", "binomial_p_value", "certified_accuracy",
           "certify", "lower_confidence_bound", "noise_block_rows", "predict", "sample_counts"]
