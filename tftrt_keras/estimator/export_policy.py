"""When an Estimator export is made: BestExporter's rule (a better evaluation than the best so far, read back from
the event files after a restart), with the metric and direction a user names."""

from absl import logging
import tensorflow as tf


def loss_smaller(best_eval_result, current_eval_result):
  """BestExporter's default: the current evaluation is better when its `loss` is smaller."""
  return best_eval_result["loss"] > current_eval_result["loss"]


def metric_compare_fn(monitor):
  """A `compare_fn` preferring a better `monitor` metric; Keras' `mode="auto"` rule decides the direction.

  `val_` is dropped (`val_loss` is the Estimator's `loss`); metrics named like accuracy or AUC are better
  when larger, everything else when smaller.
  """
  key = monitor[len("val_"):] if monitor.startswith("val_") else monitor
  higher_is_better = "acc" in key or "auc" in key or key.startswith("fmeasure") or key in ("precision", "recall")

  def compare_fn(best_eval_result, current_eval_result):
    if higher_is_better:
      return current_eval_result[key] > best_eval_result[key]
    return current_eval_result[key] < best_eval_result[key]
  compare_fn.__name__ = f"{'max' if higher_is_better else 'min'}_{key}"
  return compare_fn


def best_from_event_files(pattern, exclude_step, compare_fn):
  """The best evaluation in the event files, as `BestExporter` finds it after a restart.

  The evaluation being exported has already written its own event; it is left out (by its step) so that it
  is compared with the earlier ones instead of with itself.
  """
  best = None
  for event_file in sorted(tf.io.gfile.glob(pattern)):
    try:
      for event in tf.compat.v1.train.summary_iterator(event_file):
        if not event.HasField("summary") or (exclude_step is not None and event.step == int(exclude_step)):
          continue
        result = {v.tag: v.simple_value for v in event.summary.value if v.HasField("simple_value")}
        if not result:
          continue
        try:
          if best is None or compare_fn(best_eval_result=best, current_eval_result=result):
            best = result
        except KeyError:
          continue  # an event without the metric compare_fn reads (another summary): not an evaluation result
    except tf.errors.DataLossError:
      logging.warning("tftrt_keras: event file %s ends in a partial record; read what precedes it", event_file)
  return best
