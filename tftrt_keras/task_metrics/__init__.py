"""The model's own metrics (its loss and compiled metrics) on every variant, from labels captured with the
verification samples: what a user loses in accuracy, MAE or IoU by deploying INT8, with a paired interval.

`spec` (training process) records what the model compiles; `labels` keys the captured labels by output name;
`compute` (export worker) rebuilds the metrics and evaluates them on the normal export's and each variant's
outputs; `interval` is the paired bootstrap and the `max_metric_drop` gate; `render` writes what users read.
"""
