"""The trainer's half of one export, quick by design: publish the normal SavedModel and the captured samples,
write the manifest (everything else `pending`) and the worker's request. The worker's half is `pipeline.run`."""

import os
import shutil

from absl import logging

from tftrt_keras.artifacts.layout import CALIBRATION_FILE, VERIFICATION_FILE, ExportLayout
from tftrt_keras.artifacts.manifest import FAILED, OK, SKIPPED, new_manifest, set_artifact, write_manifest
from tftrt_keras.formats.base import NATIVE
from tftrt_keras.options import artifact_names
from tftrt_keras.pipeline.request import ExportRequest
from tftrt_keras.samples import calibration_data
from tftrt_keras.samples.by_name import cast_warnings
from tftrt_keras.samples.holdout import MORE_SAMPLES, concat_batches, holdout_rows, sample_warnings, split_holdout
from tftrt_keras.task_metrics import labels as task_labels


def _new_manifest(version, source, options, signature_key):
  manifest = new_manifest(version, source, artifact_names(options))
  manifest["signature_key"] = signature_key
  manifest["options"] = options.to_json()
  return manifest


def prepare_export(root, version, source, options, *, write_native=None, native_dir=None, batches=None,
                   verification_batches=None, signature_key="serving_default", calibration_skip_reason=None,
                   more_samples=MORE_SAMPLES, sample_casts=None, labels=None, verification_labels=None,
                   task_spec=None):
  """Publishes the normal export and the samples, and writes the manifest and the worker's request.

  Args:
    root, version: export root and the new version number.
    source: the manifest's `source` dict.
    options: `ConversionOptions`.
    write_native: callable(directory) writing the normal SavedModel (to a temp sibling, then renamed).
    native_dir: where the normal export already is (`root/<version>`); exclusive with `write_native`.
    batches: calibration batches, list of {input name: array}.
    verification_batches: held-out batches disjoint from `batches`; None: a part of `batches` is held out.
    signature_key: the signature every variant is built from.
    calibration_skip_reason: what the manifest says when there are no batches.
    more_samples: how a user gets more calibration samples, in the caller's own argument or flag names.
    sample_casts: `CastReport.entries()` of the samples' casts to the signature's dtypes.
    labels, verification_labels: per-batch labels of `batches` / `verification_batches`; None: none.
    task_spec: the model's compiled loss and metrics (`task_metrics.spec.compile_spec`); None: none.

  Returns:
    The `ExportRequest` for the worker.
  """
  layout = ExportLayout(root)
  manifest = _new_manifest(version, source, options, signature_key)
  if write_native is not None:
    temp = layout.temp_dir("native", version)
    try:
      write_native(temp)
    except BaseException:
      shutil.rmtree(temp, ignore_errors=True)
      raise
    native = layout.publish(temp, "native", version)
  else:
    native = native_dir
  set_artifact(manifest, NATIVE, OK, layout.relative(version, native))

  if verification_batches is None:
    calibration, verification, split = split_holdout(batches or [], options.verification_samples, seed=version)
    held_labels = task_labels.concat(labels or [])
    if held_labels and verification:
      rows, _ = holdout_rows(task_labels.num_rows(held_labels), options.verification_samples, seed=version)
      held_labels = {key: value[rows] for key, value in held_labels.items()}
  else:
    held_labels = task_labels.concat([part for part, b in zip(verification_labels or [], verification_batches) if b])
    calibration, verification = list(batches or []), [b for b in verification_batches if b]
    split = (f"{sum(calibration_data.num_samples(b) for b in calibration)} samples captured for calibration and "
             f"{sum(calibration_data.num_samples(b) for b in verification)} apart from them for verification")
  if not calibration:
    # The held-out samples are stored beside the calibration samples; without those there is no place for
    # them (a run that captures nothing for calibration asked for no samples at all).
    verification = []
  verify_count = sum(calibration_data.num_samples(b) for b in verification)
  request = ExportRequest(root=layout.root, version=int(version), signature_key=signature_key, options=options,
                          calibration_batch_sizes=[calibration_data.num_samples(b) for b in calibration],
                          has_calibration=bool(calibration), has_verification=bool(verification))
  if calibration:
    temp = layout.temp_dir("calibration", version)
    calibration_data.save_samples(os.path.join(temp, CALIBRATION_FILE), concat_batches(calibration))
    if verification:
      calibration_data.save_samples(os.path.join(temp, VERIFICATION_FILE), concat_batches(verification))
      if held_labels:
        calibration_data.save_samples(os.path.join(temp, task_labels.LABELS_FILE), held_labels)
    path = layout.publish(temp, "calibration", version)
    warnings = cast_warnings(sample_casts or []) + sample_warnings(
        sum(request.calibration_batch_sizes), verify_count, "INT8" in options.precisions, more_samples)
    set_artifact(manifest, "calibration", OK, layout.relative(version, path),
                 file=CALIBRATION_FILE, samples=sum(request.calibration_batch_sizes),
                 batch_sizes=request.calibration_batch_sizes,
                 verification_file=VERIFICATION_FILE if verification else None,
                 verification_samples=verify_count, split=split, **({"casts": sample_casts} if sample_casts else {}),
                 **({"warnings": warnings} if warnings else {}))
    for warning in warnings:
      logging.warning("tftrt_keras: export %s: %s", version, warning)
  else:
    set_artifact(manifest, "calibration", SKIPPED,
                 reason=calibration_skip_reason or "no calibration data was given for this export")
  if task_spec is not None:
    manifest["task_metrics"] = task_labels.manifest_entry(task_spec, bool(verification and held_labels))
  manifest["worker"] = {"owner_pid": os.getpid()}
  directory = layout.manifest_dir(version)
  write_manifest(directory, manifest)
  request.write(directory)
  return request


def record_failed_export(root, version, source, options, reason, signature_key="serving_default"):
  """Writes the manifest of an export that broke before its worker started; returns its path.

  The normal export keeps `ok` if published; the rest is `failed` with `reason`; temp directories are removed.
  """
  layout = ExportLayout(root)
  manifest = _new_manifest(version, source, options, signature_key)
  for name in manifest["artifacts"]:
    set_artifact(manifest, name, FAILED, reason=reason)
  native = layout.path(NATIVE, version)
  if os.path.isfile(os.path.join(native, "saved_model.pb")):
    set_artifact(manifest, NATIVE, OK, layout.relative(version, native))
  layout.remove_temps(version=version)
  return write_manifest(layout.manifest_dir(version), manifest)
