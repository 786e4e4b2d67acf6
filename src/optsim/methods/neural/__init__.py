"""Methods for neural problems (PAPERS.md families M and C8, A4).

* :mod:`.optimizers` -- any optimizer of :mod:`optsim.optim` or ``torch.optim`` on many client
  models at once (:class:`~.optimizers.BatchedOptimizer`), block-wise LMOs (:func:`~.optimizers.layout_lmo`);
* :mod:`.fedopt` -- ``fedopt``, ``local_opt``, ``dist_opt``;
* :mod:`.cgluon` -- ``cgluon`` (compressed Gluon); :mod:`.lmo_async` -- ``ringmaster_lmo``, ``minibatch_lmo``.
"""
