"""One export, in two halves.

`prepare_export` runs in the training process and is quick: it publishes the normal SavedModel and the
captured samples, and writes the manifest (everything else `pending`) and the worker's request.
`run_export` runs in the worker (a child process, see `export_worker`) and in the offline exporter alike:
freeze, convert each precision, verify, and close the manifest. One code path for all entry points.
"""

import os
import shutil
import time
import traceback

from absl import logging

from tftrt_keras import calibration_data
from tftrt_keras.conversion_backend import ConversionUnavailable, load_backend
from tftrt_keras.export_layout import ExportLayout
from tftrt_keras.export_request import ExportRequest
from tftrt_keras.freeze import FreezeRefused, freeze_signature
from tftrt_keras.manifest import (FAILED, OK, PENDING, SKIPPED, new_manifest, read_manifest, set_artifact,
                                  write_manifest)
from tftrt_keras.precisions import TFTRT_ARTIFACTS, artifact_names

CALIBRATION_FILE = "calibration.npz"
VERIFICATION_FILE = "verification.npz"


def split_holdout(batches):
  """Splits captured batches into (calibration, verification): the two never share a sample.

  A quarter of the batches (at least one) are held out when there are two or more; a single batch is split
  in half by samples.
  """
  if not batches:
    return [], []
  if len(batches) >= 2:
    held = max(1, len(batches) // 4)
    return batches[:-held], batches[-held:]
  only = batches[0]
  size = calibration_data.num_samples(only)
  if size < 2:
    return [only], []
  half = size // 2
  return ([{k: v[:half] for k, v in only.items()}], [{k: v[half:] for k, v in only.items()}])


def _concat(batches):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def prepare_export(root, version, source, options, *, write_native=None, native_dir=None, batches=None,
                   signature_key="serving_default", calibration_skip_reason=None):
  """Publishes the normal export and the samples, and writes the manifest and the worker's request.

  Args:
    root: export root.
    version: version number for this export (must not exist yet).
    source: dict for the manifest's `source` (kind, epoch, step, metrics...).
    options: `ConversionOptions`.
    write_native: callable(directory) writing the normal SavedModel into an empty directory; it is written
      to a temp sibling and renamed to `root/<version>`. Exclusive with `native_dir`.
    native_dir: where a normal export already is (the Estimator wrote it); it must be `root/<version>`.
    batches: captured batches, list of {input name: array}; split into calibration and verification.
    signature_key: signature to convert.
    calibration_skip_reason: what the manifest says when there are no batches (the caller knows why).

  Returns:
    The `ExportRequest` for the worker.
  """
  layout = ExportLayout(root)
  manifest = new_manifest(version, source, artifact_names(options.precisions))
  manifest["signature_key"] = signature_key
  manifest["options"] = options.to_json()
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
  set_artifact(manifest, "native", OK, layout.relative(version, native))

  calibration, verification = split_holdout(batches or [])
  request = ExportRequest(root=layout.root, version=int(version), signature_key=signature_key, options=options,
                          calibration_batch_sizes=[calibration_data.num_samples(b) for b in calibration],
                          has_calibration=bool(calibration), has_verification=bool(verification))
  if calibration:
    temp = layout.temp_dir("calibration", version)
    calibration_data.save_samples(os.path.join(temp, CALIBRATION_FILE), _concat(calibration))
    if verification:
      calibration_data.save_samples(os.path.join(temp, VERIFICATION_FILE), _concat(verification))
    path = layout.publish(temp, "calibration", version)
    set_artifact(manifest, "calibration", OK, layout.relative(version, path),
                 file=CALIBRATION_FILE, samples=sum(request.calibration_batch_sizes),
                 batch_sizes=request.calibration_batch_sizes,
                 verification_file=VERIFICATION_FILE if verification else None,
                 verification_samples=sum(calibration_data.num_samples(b) for b in verification))
  else:
    set_artifact(manifest, "calibration", SKIPPED,
                 reason=calibration_skip_reason or "no calibration data was given for this export")
  manifest["worker"] = {"owner_pid": os.getpid()}
  directory = layout.manifest_dir(version)
  write_manifest(directory, manifest)
  request.write(directory)
  return request


def record_failed_export(root, version, source, options, reason, signature_key="serving_default"):
  """Writes the manifest of an export that broke before its worker could start; returns its path.

  The normal export keeps `ok` when it was published before the failure; everything else is `failed` with
  `reason`. Temp directories of the version are removed, so nothing half-written stays behind.
  """
  layout = ExportLayout(root)
  manifest = new_manifest(version, source, artifact_names(options.precisions))
  manifest["signature_key"] = signature_key
  manifest["options"] = options.to_json()
  for name in manifest["artifacts"]:
    set_artifact(manifest, name, FAILED, reason=reason)
  native = layout.path("native", version)
  if os.path.isfile(os.path.join(native, "saved_model.pb")):
    set_artifact(manifest, "native", OK, layout.relative(version, native))
  layout.remove_temps(version=version)
  return write_manifest(layout.manifest_dir(version), manifest)


class _Run:
  """State of one `run_export` call: the manifest, saved after every step so a crash loses no finished work."""

  def __init__(self, request):
    self.request = request
    self.layout = ExportLayout(request.root)
    self.directory = self.layout.manifest_dir(request.version)
    self.manifest = read_manifest(self.directory)
    self.manifest.setdefault("timings", {})

  def save(self):
    write_manifest(self.directory, self.manifest)

  def record(self, name, status, path=None, reason=None, **details):
    relative = self.layout.relative(self.request.version, path) if path else None
    set_artifact(self.manifest, name, status, relative, reason, **details)
    self.save()

  def samples(self, file_name):
    return calibration_data.load_samples(
        os.path.join(self.layout.path("calibration", self.request.version), file_name), argument="calibration_data")

  def build_into_temp(self, artifact, build):
    """Runs build(temp_dir) and publishes the directory; on any error the temp directory is removed."""
    temp = self.layout.temp_dir(artifact, self.request.version)
    try:
      result = build(temp)
      return self.layout.publish(temp, artifact, self.request.version), result
    except BaseException:
      shutil.rmtree(temp, ignore_errors=True)
      raise


def _error_text(err):
  return f"{type(err).__name__}: {err}".strip()


def run_export(request, backend=None):
  """Freezes, converts and verifies one prepared export; returns the closed manifest.

  Every artifact ends `ok`, `skipped`, `failed` or `rejected` with a reason; an exception inside one step is
  recorded and the next step still runs. Only a dead process leaves `pending` behind, and the parent (or the
  next run) closes that as failed.
  """
  run = _Run(request)
  native_dir = run.layout.path("native", request.version)
  backend = backend or load_backend(request.options.backend)
  run.manifest["environment"] = backend.environment()
  run.manifest["backend"] = getattr(backend, "name", type(backend).__name__)
  run.save()
  started = time.monotonic()

  try:
    path, io = run.build_into_temp("frozen", lambda d: freeze_signature(native_dir, request.signature_key, d))
    run.record("frozen", OK, path, inputs=[i["tensor"] for i in io["inputs"]],
               outputs=[o["tensor"] for o in io["outputs"]], signature=io)
  except FreezeRefused as err:
    run.record("frozen", SKIPPED, reason=str(err))
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: freezing failed:\n%s", traceback.format_exc())
    run.record("frozen", FAILED, reason=_error_text(err))
  run.manifest["timings"]["freeze_seconds"] = round(time.monotonic() - started, 3)

  _convert_all(run, backend, native_dir)

  if request.has_verification:
    from tftrt_keras import verification  # pylint: disable=g-import-not-at-top
    verification.verify_export(run)
  else:
    run.manifest["verification"] = {"skipped": "no held-out samples: the export has fewer than two captured "
                                               "samples, or no calibration data at all"}
    run.save()

  for name, entry in run.manifest["artifacts"].items():
    if entry["status"] == PENDING:  # a step that neither succeeded nor failed is a bug; never leave it open
      set_artifact(run.manifest, name, FAILED, reason="internal error: step did not record a result")
  run.manifest["timings"]["total_seconds"] = round(time.monotonic() - started, 3)
  run.save()
  return run.manifest


def _convert_all(run, backend, native_dir):
  request = run.request
  artifacts = [TFTRT_ARTIFACTS[p] for p in request.options.precisions]
  unavailable = backend.unavailable_reason()
  if unavailable:
    for artifact in artifacts:
      run.record(artifact, SKIPPED, reason=unavailable)
    return
  try:
    calibration = (calibration_data.batches(run.samples(CALIBRATION_FILE), max(request.calibration_batch_sizes))
                   if request.has_calibration else [])
  except Exception as err:  # pylint: disable=broad-except
    # Unreadable samples (a truncated .npz) fail the conversions that need them, not the whole worker.
    for artifact in artifacts:
      run.record(artifact, FAILED, reason=f"calibration samples unreadable: {_error_text(err)}")
    return
  build = _build_batches(calibration, request.options.max_batch_size)
  for precision, artifact in zip(request.options.precisions, artifacts):
    if precision == "INT8" and not calibration:
      run.record(artifact, SKIPPED, reason="INT8 needs calibration data and this export has none")
      continue
    started = time.monotonic()
    try:
      path, _ = run.build_into_temp(artifact, lambda d, p=precision: backend.convert(
          native_dir, request.signature_key, p, request.options, calibration, build, d))
      run.record(artifact, OK, path, engines_prebuilt_for=sorted({_batch_size(b) for b in build}),
                 seconds=round(time.monotonic() - started, 3))
    except ConversionUnavailable as err:
      run.record(artifact, SKIPPED, reason=str(err))
    except Exception as err:  # pylint: disable=broad-except
      logging.error("tftrt_keras: %s conversion failed:\n%s", precision, traceback.format_exc())
      run.record(artifact, FAILED, reason=_error_text(err))


def _batch_size(batch):
  return calibration_data.num_samples(batch)


def _build_batches(calibration, max_batch_size):
  """Batches whose shapes the engines are prebuilt for: batch 1, each captured size, and `max_batch_size`.

  With a "Range" dynamic-shape profile, the smallest and largest shapes bound the profile; every size in
  between is then served by the same engine without a rebuild.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not calibration:
    return []
  sample = calibration[0]
  sizes = {1} | {_batch_size(b) for b in calibration}
  if max_batch_size:
    sizes = {s for s in sizes if s <= max_batch_size} | {max_batch_size}
  built = []
  for size in sorted(sizes):
    reps = -(-size // _batch_size(sample))
    built.append({k: np.concatenate([v] * reps)[:size] for k, v in sample.items()})
  return built
