"""When an Estimator export is made: BestExporter's rule (a better evaluation than the best so far, read back from
the event files after a restart), with the metric and direction a user names."""

from absl import logging
import tensorflow as tf

from tftrt_keras.monitor import improves, mode_from_metric_name


def loss_smaller(best_eval_result, current_eval_result):
  """BestExporter's default: the current evaluation is better when its `loss` is smaller."""
  return best_eval_result["loss"] > current_eval_result["loss"]


def metric_compare_fn(monitor):
  """A `compare_fn` preferring a better `monitor` metric, in its own direction (`monitor.mode_from_metric_name`).

  `val_` is dropped (`val_loss` is the Estimator's `loss`).
  """
  key = monitor[len("val_"):] if monitor.startswith("val_") else monitor
  mode = mode_from_metric_name(monitor)

  def compare_fn(best_eval_result, current_eval_result):
    return improves(current_eval_result[key], best_eval_result[key], mode)
  compare_fn.__name__ = f"{mode}_{key}"
  return compare_fn


def best_from_event_files(pattern, exclude_step, compare_fn):
  """The best earlier evaluation in the event files, as `BestExporter` finds it after a restart (this step left out).
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
