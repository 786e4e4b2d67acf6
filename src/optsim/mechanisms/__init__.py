"""Communication mechanisms: what clients send, given the state they share with the server.

Each mechanism is written once, holds its per-client state as declared state
(:mod:`optsim.state`, so checkpoints and replica stacks see it) and talks to the server through the
channel, which counts the bits:

* :mod:`.three_pc` -- three point compressors: EF21 error feedback, LAG and CLAG lazy
  aggregation (Bernoulli aggregation is EF21 with the unscaled ``bernoulli`` compressor), and
  :class:`Feedback`, a mechanism with its state (EF21, EF21-PP, EF21-BC, the 3PC method, compressed
  Gluon);
* :mod:`.shifts` -- learned shifts (DIANA, EF-BV, EF21-P + DIANA, DCGD-SHIFT);
* :mod:`.differences` -- MARINA's estimate refreshed with probability p, otherwise moved by
  compressed differences (MARINA, PP-MARINA, VR-MARINA, compressed Gluon).

Gradient estimators (PAGE, SARAH, MVR, loopless SVRG) are in :mod:`optsim.estimators`.
"""
from .differences import MarinaEstimate
from .shifts import Shifts
from .three_pc import CLAG, LAG, MECHANISMS, EF21Mechanism, Feedback, ThreePC, make_three_pc, three_pc_stepsize

__all__ = ["ThreePC", "EF21Mechanism", "LAG", "CLAG", "MECHANISMS", "make_three_pc", "three_pc_stepsize",
           "Feedback", "Shifts", "MarinaEstimate"]
