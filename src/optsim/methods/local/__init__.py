"""Local training, client sampling and reshuffling (PAPERS.md family L).

Two kinds of rounds, told apart in the trace by ``comm_rounds`` (rounds in which bits moved) and
``grad_evals`` (local gradients, per client):

* FedAvg-type (one step = one communication round of local steps): :mod:`.rounds` -- ``fedavg``,
  ``local_sgd``, ``fedprox``, ``scaffold``, ``fednova``; :mod:`.shuffle` -- ``fedrr``,
  ``fedshuffle``, ``fedshuffle_mvr``; :mod:`.personalized` -- ``l2gd``, ``fo_maml``, ``fo_muml``,
  ``clip_local_gd``; :mod:`.primal_dual` -- ``apda_inexact``, ``5gcs``, ``5gcs_cc``;
* ProxSkip-type (one step = one local step, communication by a shared coin): :mod:`.proxskip` --
  ``proxskip``, ``proxskip_vr``; :mod:`.gradskip` -- ``gradskip``, ``gradskip_plus``;
  :mod:`.scaffnew` -- ``compressed_scaffnew``, ``tamuna``.

Client samplers (``full``, ``nice``, ``independent``, ``importance``, ``cyclic``) are in
:mod:`optsim.sampling`.
"""
