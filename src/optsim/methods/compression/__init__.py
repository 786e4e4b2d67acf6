"""Compression and variance reduction (PAPERS.md family C).

* :mod:`.shifted` -- ``ef_bv``, ``dcgd_shift``; :mod:`.three_pc` -- ``three_pc`` (EF21 / LAG / CLAG);
* :mod:`.dasha` -- ``dasha``, ``dasha_page``, ``dasha_mvr``; :mod:`.dasha_pp` -- ``dasha_pp``,
  ``dasha_pp_page``, ``dasha_pp_mvr``; :mod:`.vr_marina` -- ``vr_marina``;
* :mod:`.newton` -- ``fednl``, ``newton_3pc``, ``newton_3pc_bc``, ``newton_3pc_pp``;
* :mod:`.reshuffling` -- ``q_rr``, ``diana_rr``, ``q_nastya``, ``diana_nastya``, ``q_sgd``,
  ``diana_sgd``, ``fedcrr``, ``fedcrr_vr``, ``fedcrr_vr2``; :mod:`.sampling_page` -- ``page_as``.
"""
