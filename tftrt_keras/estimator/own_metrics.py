"""The model's own metrics for an Estimator export: the standard evaluation keys of canned Estimators' heads
(accuracy, average_loss, auc, precision, recall...) as Keras metrics on the exported signature's outputs, with
the evaluation labels the calibration hook captured, for the worker to compute on every variant
(`task_metrics`). A custom `model_fn` reporting these keys is read as the canned heads define them."""

import numpy as np

from tftrt_keras.errors import invalid_argument
from tftrt_keras.task_metrics.compute import LABEL_PREFIX

FLAVOR = "tf.keras"  # Estimator runs on TF 2.15 only, whose tf.keras is Keras 2
# Evaluation keys that are not a figure of the model's answers against the labels, and why.
_NOT_COMPARED = {
    "loss": "the mean of per-batch losses depends on the evaluation's batching; `average_loss` is its per-sample "
            "figure",
    "label/mean": "a statistic of the labels, the same for every variant",
    "accuracy_baseline": "a statistic of the labels, the same for every variant",
    "prediction/mean": "the mean prediction, not a figure against the labels",
}


# Every evaluation key `_metrics_of` can compute on a variant (the head decides which of them a model reports).
COMPUTED_KEYS = ("accuracy", "average_loss", "auc", "auc_precision_recall", "precision", "recall")


def check_metric_drops(max_metric_drop):
  """Raises ValueError naming `max_metric_drop` when it names a key no Estimator export here computes: known
  before training, where an evaluation's own keys are not (an unknown name would only ever be `unverified`)."""
  unknown = sorted(set(max_metric_drop or {}) - set(COMPUTED_KEYS))
  if unknown:
    raise invalid_argument("max_metric_drop", max_metric_drop, f"evaluation keys among {list(COMPUTED_KEYS)}",
                           hint=f"{unknown} cannot be computed on the variants of an Estimator export; "
                                f"{sorted(_NOT_COMPARED)} are not figures of the model's answers.")


def _metric(class_name, name, **config):
  return {"class_name": class_name, "config": dict(name=name, **config)}


def _head(keys):
  """"binary", "multi_class" or "regression": the canned head whose evaluation keys these are (None: none)."""
  if keys & {"auc", "precision", "recall", "auc_precision_recall"}:
    return "binary"
  if "accuracy" in keys:
    return "multi_class"
  return "regression" if "average_loss" in keys else None


def _first(outputs, *names):
  return next((n for n in names if n in outputs), None)


def _metrics_of(head, outputs):
  """({output: [metric config]}, {derived output: [output, column]}) for the head on the signature's outputs."""
  if head == "multi_class":
    logits = _first(outputs, "logits")
    probabilities = logits or _first(outputs, "probabilities", "scores")
    if probabilities is None:
      return {}, {}
    return {probabilities: [_metric("SparseCategoricalAccuracy", "accuracy"),
                            _metric("SparseCategoricalCrossentropy", "average_loss", from_logits=bool(logits))]}, {}
  if head == "binary":
    columns = {}
    probability = _first(outputs, "logistic")
    if probability is None and "scores" in outputs:  # the classification signature: [P(0), P(1)] per sample
      probability, columns = "scores[1]", {"scores[1]": ["scores", 1]}
    if probability is None:
      return {}, {}
    metrics = {probability: [_metric("BinaryAccuracy", "accuracy"), _metric("Precision", "precision"),
                             _metric("Recall", "recall"), _metric("AUC", "auc"),
                             _metric("AUC", "auc_precision_recall", curve="PR")]}
    if "logits" in outputs:
      metrics["logits"] = [_metric("BinaryCrossentropy", "average_loss", from_logits=True)]
    else:
      metrics[probability].append(_metric("BinaryCrossentropy", "average_loss"))
    return metrics, columns
  prediction = _first(outputs, "predictions", "outputs")
  return ({prediction: [_metric("MeanSquaredError", "average_loss")]} if prediction else {}), {}


def canned_spec(eval_result, output_names, label):
  """The `task_metrics` spec of an Estimator export (see `task_metrics.spec.compile_spec`).

  Args:
    eval_result: the evaluation's result (its keys say which metrics the head reports).
    output_names: the exported signature's output names.
    label: one captured labels array (its dtype decides whether labels can be compared), or None.
  """
  keys = {k for k in (eval_result or {}) if k != "global_step"}
  head = _head(keys)
  metrics, columns = _metrics_of(head, set(output_names)) if head else ({}, {})
  if label is not None and np.asarray(label).dtype.kind in "SUO":
    metrics = {}  # string labels (label_vocabulary): the outputs number the classes, the labels name them
    reason = "string labels (label_vocabulary) are not mapped to class ids here"
  else:
    reason = ("no canned head's metric" if head is None else
              f"not a standard metric of a canned {head} head, or the signature lacks the output it needs")
  computed = {m["config"]["name"] for configs in metrics.values() for m in configs}
  left_out = {k: _NOT_COMPARED.get(k, reason) for k in sorted(keys - computed)}
  return {"keras": FLAVOR, "outputs": sorted(metrics), "flat_names": True, "columns": columns, "loss": {},
          "loss_weights": {}, "metrics": metrics, "weighted_metrics": {}, "left_out": left_out}


def task_inputs(samples, signature, eval_result):
  """`prepare_export`'s keyword arguments for the model's own metrics: labels, verification_labels, task_spec."""
  calibration, verification = samples.last_labels
  first = (verification or calibration or [None])[0]
  spec = canned_spec(eval_result, [t.name for t in signature.outputs], first)

  def keyed(per_batch):
    return None if per_batch is None else [
        {LABEL_PREFIX + output: np.asarray(label) for output in spec["outputs"]} for label in per_batch]
  return {"labels": keyed(calibration), "verification_labels": keyed(verification), "task_spec": spec}
