"""Figures stay readable with many runs: one hue per method and shades within it, a legend outside
the axes, labels that say what differs, bits in kbit/Mbit; seeds are averaged only within one
otherwise identical configuration."""
from __future__ import annotations

import numpy as np

from optsim.experiment.report import best_curves, group_curves
from optsim.plots import Curve, describe, draw_curves
from optsim.trace import Trace

METHODS = ["gd", "dcgd", "diana", "ef21"]


def _trace(method, mult, seed, rounds=50):
    spec = {"name": method, "stepsize_mult": mult}
    if method != "gd":
        spec["compressor"] = {"name": "top_k" if method == "ef21" else "rand_k", "k": 6}
    t = Trace(describe(spec) + f" [seed={seed}]", method, status="finished")
    rng = np.random.default_rng(seed)
    for k in range(rounds):
        t.append({"round": k, "bits_up": 3.2e4 * k * (1 + METHODS.index(method)),
                  "f_gap": (0.9 - 0.05 * mult) ** k * (1 + 0.1 * rng.random())})
    t.meta["config"] = spec
    return t, {"seed": seed, "method": spec, "stop": {"max_rounds": rounds}}


def test_many_curves_read_as_methods_with_an_outside_legend():
    runs = [_trace(m, mult, seed) for m in METHODS for mult in (0.5, 1.0, 2.0) for seed in (0, 1, 2)]
    curves = group_curves([(c, t) for t, c in runs])
    assert len(curves) == 12 and all(len(c.traces) == 3 for c in curves)  # 36 runs, 3 seeds each
    fig = draw_curves(curves, ["rounds", "bits_up"], "f_gap", "many")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
        assert not ax.xaxis.get_offset_text().get_text()  # no "1e6" offset
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("rand-6" in t and "x2" in t and "(3 seeds)" in t for t in texts)
    assert fig.axes[1].get_xlabel().endswith(("(kbit)", "(Mbit)"))
    hues = {}
    for line, c in zip(fig.axes[0].get_lines(), curves):
        hues.setdefault(c.family, set()).add(line.get_color())
    assert all(len(v) == 3 for v in hues.values())  # shades within a method
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_seeds_are_averaged_only_within_one_configuration():
    a, ca = _trace("gd", 1.0, 0, rounds=640)
    b, cb = _trace("gd", 1.0, 0, rounds=100)  # same seed, another config: never averaged with a
    c, cc = _trace("gd", 1.0, 1, rounds=640)
    curves = group_curves([(ca, a), (cb, b), (cc, c)])
    sizes = sorted(len(k.traces) for k in curves)
    assert sizes == [1, 2]


def test_best_per_method_and_top():
    runs = [_trace(m, mult, 0) for m in METHODS for mult in (0.5, 1.0, 2.0)]
    curves = group_curves([(c, t) for t, c in runs])
    best = best_curves(curves, "f_gap", per_family=True)
    assert [c.family for c in best] == sorted({c.family for c in curves}, key=[c.family for c in best].index)
    assert len(best) == 4 and all("x2" in c.label for c in best)  # the largest multiplier converges fastest here
    assert len(best_curves(curves, "f_gap", top=5)) == 5
    assert isinstance(best[0], Curve)
