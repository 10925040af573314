"""The model's own metrics (loss and compiled metrics) on every variant, with a paired interval.

`spec` records what the model compiles, `labels` keys captured labels by output, `compute` evaluates in the
worker, `interval` is the paired bootstrap and `max_metric_drop` gate, `render` writes what users read.
"""
