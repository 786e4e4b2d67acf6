"""Differentially private methods (PAPERS.md B4). Any method becomes private through the config's
``privacy:`` block (the channel bounds and noises what it aggregates, :mod:`optsim.privacy`): DP-SGD
is ``sgd`` and DP-FedAvg is ``fedavg`` with ``privacy: {clip: C, noise_multiplier: sigma, ...}``.
This package holds the methods whose update is itself built for privacy.

* :mod:`.normec` -- ``alpha_normec`` (smoothed normalization with error compensation) and
  ``fed_alpha_normec`` (our reading of its federated version: local steps, client sampling).
"""
