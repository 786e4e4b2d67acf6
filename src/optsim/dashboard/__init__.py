"""A local web dashboard over the results store: ``optsim dashboard [--store PATH] [--port N]``.

A standard-library HTTP server (:mod:`optsim.dashboard.server`) on 127.0.0.1 serves one page (a runs
table filtered by experiment, method, status and config fields and grouped by any config field; a
plot of any metric against rounds, bits, oracle calls or time with log axes and the mean over seeds
with a min-max or standard-error band, one hue per method or per value of the group field; a sweep
view, the final or best value of a metric against a swept config field, one line per method, the
best point of each marked; the outcomes of ``optsim reproduce`` with their figures; a run's config,
metadata and trace; a form that launches ``optsim run|sweep CONFIG`` as a subprocess,
:mod:`optsim.dashboard.launch`) and JSON endpoints (:mod:`optsim.dashboard.data`). The store is opened read-only
for every request, so the dashboard keeps working while a sweep writes. Scripts and styles come from
this package and plotly.js from the ``plotly`` package: nothing is loaded from the network. A plot
exports as the figure ``optsim plot`` draws (PNG, PDF) or as CSV of its data.
"""
from .data import (
    Query,
    export_plot,
    list_runs,
    plot_curves_data,
    recipe_outcomes,
    run_detail,
    sweep_data,
    trace_columns,
)
from .server import CSP, make_server, serve

__all__ = ["CSP", "Query", "export_plot", "list_runs", "make_server", "plot_curves_data", "recipe_outcomes",
           "run_detail", "serve", "sweep_data", "trace_columns"]
