"""Asynchronous and heterogeneous-time methods (PAPERS.md family A).

Event-driven methods (:class:`~optsim.methods.event.EventMethod`: the arrival rule on the event
engine of :mod:`optsim.clock.engine`):

* :mod:`.sgd` -- ``minibatch_sgd``, ``asgd``, ``rescaled_asgd``;
* :mod:`.ringmaster` -- ``ringmaster_asgd``; :mod:`.ringleader` -- ``ringleader_asgd``;
* :mod:`.rennala` -- ``rennala_sgd``, ``rennala_mvr``;
* :mod:`.local` -- ``async_local_sgd``, and ``loscar_sgd`` (rounds with computed durations).

Schedule-driven simulations (:mod:`.pipeline`: ``pipedream``, ``local_sgd_pipe``; ``rpd`` is
round-based) and Independent Subnetwork Training (:mod:`.ist`: ``ist``).
"""
from .ist import IST
from .local import AsyncLocalSGD, LoscarSGD
from .pipeline import LocalSGDPipe, PipeDream, RandomizedPipeDream
from .rennala import RennalaMVR, RennalaSGD
from .ringleader import RingleaderASGD
from .ringmaster import RingmasterASGD
from .sgd import ASGD, MinibatchSGD, RescaledASGD

__all__ = ["MinibatchSGD", "ASGD", "RescaledASGD", "RingmasterASGD", "RingleaderASGD", "RennalaSGD", "RennalaMVR",
           "AsyncLocalSGD", "LoscarSGD", "PipeDream", "RandomizedPipeDream", "LocalSGDPipe", "IST"]
