"""Byzantine-robust methods (PAPERS.md family B): the server aggregates what it receives with a
robust aggregator (``aggregator:`` of the method, :mod:`optsim.robust.aggregators`) under the run's
threat model (``byzantine:`` of the config, :mod:`optsim.robust.threat`).

* :mod:`.base` -- what they share: the attack's view of the round, the clipping heuristic
  (Malinovsky et al. 2024, eq. 10) and the constants of the honest clients their theorems use;
* :mod:`.vr_marina` -- ``byz_vr_marina`` (B1), ``byz_vr_marina_pp`` (B3, PP and PP+);
* :mod:`.compressed` -- ``byz_ef21``, ``byz_ef21_bc``, ``byz_dasha_page`` (B2);
* :mod:`.baselines` -- ``br_sgdm`` (robust SGD with worker momentum) and ``br_diana`` (robust
  DIANA; robust compressed SGD and robust SGD as its special cases).
"""
