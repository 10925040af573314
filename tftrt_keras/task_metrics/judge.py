"""The worker's part: the model's own metrics on the normal export and each variant, from the outputs
verification computed anyway (nothing runs twice), into the manifest, with the `max_metric_drop` gate."""

import json
import os
import time
import traceback

from absl import logging

from tftrt_keras.task_metrics import interval
from tftrt_keras.task_metrics.compute import TaskMetrics

_WORSE = {"ok": 0, "unverified": 1, "rejected": 2}
METADATA_FILE = "model.json"  # beside an ONNX model or a TensorRT plan (see formats/onnx, formats/tensorrt)


class VariantMetrics:
  """Started on the normal export's outputs; `judge` each variant's outputs after its agreement verdict.

  Args:
    manifest: the export's manifest (its `task_metrics` entry is filled in place).
    load_labels: callable(file name) -> {key: array} of the labels file beside the verification samples.
    reference: the normal export's outputs on the verification samples.
    max_metric_drop: `ConversionOptions.max_metric_drop`.
  """

  def __init__(self, manifest, load_labels, reference, max_metric_drop):
    self._entry = manifest.get("task_metrics")
    self._drops = dict(max_metric_drop or {})
    self._metrics = None
    self.seconds = 0.0
    if not self._entry or not self._entry.get("labels_file"):
      return
    started = time.monotonic()
    try:
      self._metrics = TaskMetrics(self._entry["spec"], load_labels(self._entry["labels_file"]), reference)
      self._entry.update(samples=self._metrics.samples, method=interval.method_text(self._metrics.resamples),
                         normal=self._metrics.normal_values())
    except Exception as err:  # pylint: disable=broad-except
      logging.error("tftrt_keras: the model's own metrics could not be set up:\n%s", traceback.format_exc())
      self._entry["error"] = f"{type(err).__name__}: {err}"
      self._metrics = None
    self._record(started)

  def _record(self, started):
    self.seconds += time.monotonic() - started
    if self._metrics is not None:
      self._entry["left_out"] = dict(self._metrics.left_out)
    if self._entry is not None:
      self._entry["seconds"] = round(self.seconds, 3)

  def judge(self, name, outputs, verdict, reason, path=None):
    """The variant's figures into `task_metrics.variants[name]` and into the `model.json` in `path` (where the
    variant has one); returns the (verdict, reason) after the gate: the worse of the agreement verdict and the
    metric gate's."""
    if self._metrics is None:
      if self._drops and self._entry is not None and verdict == "ok":
        why = self._entry.get("skipped") or self._entry.get("error") or "no labels"
        return "unverified", f"max_metric_drop cannot be checked: {why}"
      return verdict, reason
    started = time.monotonic()
    try:
      figures, gated = self._metrics.compare(outputs, self._drops)
    except Exception as err:  # pylint: disable=broad-except
      logging.error("tftrt_keras: the model's own metrics failed on %s:\n%s", name, traceback.format_exc())
      figures, gated = {"error": f"{type(err).__name__}: {err}"}, None
    self._entry.setdefault("variants", {})[name] = figures
    if path is not None:
      self._into_metadata(path, figures)
    self._record(started)
    if self._drops and gated is None:
      gated = ("unverified", "max_metric_drop names no metric computed here")
    if gated is None or _WORSE.get(gated[0], 0) <= _WORSE.get(verdict, 0):
      return verdict, reason
    return gated[0], (f"{reason}; " if reason else "") + f"metric gate: {gated[1]}"

  def _into_metadata(self, path, figures):
    """`model.json`'s `task_metrics`: the figures travel with the variant (a Triton repository, a copy)."""
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
      return
    try:
      with open(metadata_path) as f:
        metadata = json.load(f)
      metadata["task_metrics"] = {"samples": self._entry.get("samples"), "method": self._entry.get("method"),
                                  "metrics": figures, "left_out": dict(self._metrics.left_out)}
      temporary = metadata_path + ".tmp"
      with open(temporary, "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
      os.replace(temporary, metadata_path)
    except (OSError, ValueError) as err:
      logging.warning("tftrt_keras: could not add the model's own metrics to %s: %s", metadata_path, err)
