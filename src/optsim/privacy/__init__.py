"""Differential privacy of federated runs: the Gaussian mechanism on the clients' messages and its
accounting with Google's dp-accounting (RDP and PLD).

Mechanism (:mod:`optsim.privacy.mechanisms`):

* :class:`Privatizer` -- one run's mechanism: bound each client's row, add noise, count releases;
* :func:`clip_rows`, :func:`smoothed_normalize` -- the two bounds of a client's contribution.

Accounting (:mod:`optsim.privacy.accounting`):

* :func:`epsilon` -- epsilon of ``steps`` rounds of the subsampled Gaussian mechanism at a delta;
* :func:`noise_for_epsilon` -- the smallest noise multiplier that meets a target epsilon;
* :class:`PrivacyAccountant` -- the privacy one run has spent: rounds counted, epsilon when logged;
* :func:`available_accountants`, ``ACCOUNTANTS``, ``SAMPLINGS``, ``PLD_DISCRETIZATION``.
"""
from __future__ import annotations

from .accounting import (ACCOUNTANTS, PLD_DISCRETIZATION, SAMPLINGS, PrivacyAccountant, available_accountants,
                         epsilon, noise_for_epsilon)
from .mechanisms import Privatizer, clip_rows, smoothed_normalize

__all__ = ["Privatizer", "clip_rows", "smoothed_normalize", "epsilon", "noise_for_epsilon", "PrivacyAccountant",
           "available_accountants", "ACCOUNTANTS", "SAMPLINGS", "PLD_DISCRETIZATION"]
