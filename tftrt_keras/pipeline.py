"""One export, in two halves.

`prepare_export` runs in the training process and is quick: it publishes the normal SavedModel and the
captured samples, and writes the manifest (everything else `pending`) and the worker's request.
`run_export` runs in the worker (a child process, see `export_worker`) and in the offline exporter alike:
freeze, build each variant from its source (see `tftrt_keras.formats`), verify, and close the manifest. One
code path for all entry points.
"""

import os
import shutil
import time
import traceback

from absl import logging

from tftrt_keras import calibration_data
from tftrt_keras import formats as formats_lib
from tftrt_keras.export_layout import ExportLayout
from tftrt_keras.export_request import ExportRequest
from tftrt_keras.formats.base import NATIVE, BuildJob, VariantFailed, VariantUnavailable
from tftrt_keras.freeze import FreezeRefused, freeze_signature
from tftrt_keras.manifest import (FAILED, OK, PENDING, SKIPPED, new_manifest, read_manifest, set_artifact,
                                  write_manifest)
from tftrt_keras.precisions import artifact_names

CALIBRATION_FILE = "calibration.npz"
VERIFICATION_FILE = "verification.npz"
# Below these, say so: NVIDIA's ModelOpt recommends at least 500 calibration samples, Ultralytics warns under
# 300; fewer than 100 verification samples cannot bound an agreement near 0.97 (see `verification`).
MIN_CALIBRATION_SAMPLES = 300
MIN_VERIFICATION_SAMPLES = 100


def split_holdout(batches, verification_samples, seed=0):
  """Splits captured batches into (calibration, verification, note): the two never share a sample.

  A quarter of the samples (at most `verification_samples`, at least one when there are two or more) are
  held out, chosen at random over the whole pass, so neither side sees only one end of a sorted validation
  set. Calibration keeps the captured batch size (the engines' profile depends on it).

  Returns:
    (calibration batches, verification batches, a sentence saying how the samples were split).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  if not batches:
    return [], [], None
  samples = _concat(batches)
  total = calibration_data.num_samples(samples)
  held = min(verification_samples, max(1, total // 4)) if total >= 2 else 0
  order = np.random.default_rng(seed).permutation(total)
  verify_index, calibrate_index = np.sort(order[:held]), np.sort(order[held:])
  batch_size = max(calibration_data.num_samples(b) for b in batches)
  calibration = calibration_data.batches({k: v[calibrate_index] for k, v in samples.items()}, batch_size)
  verification = [{k: v[verify_index] for k, v in samples.items()}] if held else []
  note = (f"of {total} captured samples, {total - held} calibrate and {held} verify (held out at random over "
          "the whole pass)")
  return calibration, verification, note


def _concat(batches):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def sample_warnings(calibration_samples, verification_samples, wants_int8):
  """What a user should hear about too few samples (empty when there is nothing to say)."""
  warnings = []
  if wants_int8 and 0 < calibration_samples < MIN_CALIBRATION_SAMPLES:
    warnings.append(f"INT8 calibrates on {calibration_samples} samples; at least {MIN_CALIBRATION_SAMPLES} are "
                    "recommended (NVIDIA ModelOpt: 500): raise calibration_batches or pass more calibration_data")
  if 0 < verification_samples < MIN_VERIFICATION_SAMPLES:
    warnings.append(f"verification judges on {verification_samples} held-out samples; below "
                    f"{MIN_VERIFICATION_SAMPLES} an agreement verdict can hardly pass its confidence bound")
  return warnings


def _new_manifest(version, source, options, signature_key):
  manifest = new_manifest(version, source, artifact_names(options))
  manifest["signature_key"] = signature_key
  manifest["options"] = options.to_json()
  return manifest


def prepare_export(root, version, source, options, *, write_native=None, native_dir=None, batches=None,
                   verification_batches=None, signature_key="serving_default", calibration_skip_reason=None):
  """Publishes the normal export and the samples, and writes the manifest and the worker's request.

  Args:
    root: export root.
    version: version number for this export (must not exist yet).
    source: dict for the manifest's `source` (kind, epoch, step, metrics...).
    options: `ConversionOptions`.
    write_native: callable(directory) writing the normal SavedModel into an empty directory; it is written
      to a temp sibling and renamed to `root/<version>`. Exclusive with `native_dir`.
    native_dir: where a normal export already is (the Estimator wrote it); it must be `root/<version>`.
    batches: captured calibration batches, list of {input name: array}.
    verification_batches: held-out batches captured apart from `batches` (disjoint from them). None: a part
      of `batches` is held out (see `split_holdout`).
    signature_key: the signature every variant is built from.
    calibration_skip_reason: what the manifest says when there are no batches (the caller knows why).

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
  else:
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
    calibration_data.save_samples(os.path.join(temp, CALIBRATION_FILE), _concat(calibration))
    if verification:
      calibration_data.save_samples(os.path.join(temp, VERIFICATION_FILE), _concat(verification))
    path = layout.publish(temp, "calibration", version)
    warnings = sample_warnings(sum(request.calibration_batch_sizes), verify_count, "INT8" in options.precisions)
    set_artifact(manifest, "calibration", OK, layout.relative(version, path),
                 file=CALIBRATION_FILE, samples=sum(request.calibration_batch_sizes),
                 batch_sizes=request.calibration_batch_sizes,
                 verification_file=VERIFICATION_FILE if verification else None,
                 verification_samples=verify_count, split=split, **({"warnings": warnings} if warnings else {}))
    for warning in warnings:
      logging.warning("tftrt_keras: export %s: %s", version, warning)
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
  manifest = _new_manifest(version, source, options, signature_key)
  for name in manifest["artifacts"]:
    set_artifact(manifest, name, FAILED, reason=reason)
  native = layout.path(NATIVE, version)
  if os.path.isfile(os.path.join(native, "saved_model.pb")):
    set_artifact(manifest, NATIVE, OK, layout.relative(version, native))
  layout.remove_temps(version=version)
  return write_manifest(layout.manifest_dir(version), manifest)


def retain_exports(root, keep, options):
  """Keeps the newest `keep` exports of `root` and drops the older ones' Triton versions with them.

  Never raises: retention must not hurt a training run (what could not be deleted is logged and stays).
  """
  try:
    ExportLayout(root).retain(keep)
  except Exception:  # pylint: disable=broad-except
    logging.exception("tftrt_keras: retention failed; old exports were left in place")
    return
  if options.triton_repository:
    try:
      from tftrt_keras.serving import triton  # pylint: disable=g-import-not-at-top
      triton.retain_for_export(root, options)
    except Exception:  # pylint: disable=broad-except
      logging.exception("tftrt_keras: Triton retention failed; old Triton versions were left in place")


class ExportRun:
  """One `run_export` call: the request, where things live, and the manifest, saved after every step so a
  crash loses no finished work. Verification and serving take this value; nothing else of the pipeline."""

  def __init__(self, request):
    self.request = request
    self.layout = ExportLayout(request.root)
    self.directory = self.layout.manifest_dir(request.version)
    self.manifest = read_manifest(self.directory)
    self.manifest.setdefault("timings", {})
    self.job = BuildJob(
        root=self.layout.root, version=request.version, native_dir=self.layout.path(NATIVE, request.version),
        signature_key=request.signature_key, signature={}, options=request.options,
        calibration_batch_sizes=list(request.calibration_batch_sizes),
        load_calibration=(lambda: self.samples(CALIBRATION_FILE)) if request.has_calibration else None)

  def save(self):
    write_manifest(self.directory, self.manifest)

  def record(self, name, status, path=None, reason=None, **details):
    relative = self.layout.relative(self.request.version, path) if path else None
    set_artifact(self.manifest, name, status, relative, reason, **details)
    self.save()

  def artifact_dir(self, name):
    """Absolute directory of an `ok` artifact, else None."""
    entry = self.manifest["artifacts"].get(name, {})
    if entry.get("status") != OK or not entry.get("path"):
      return None
    return self.layout.resolve(self.request.version, entry["path"])

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


def _environment(options, variant_formats):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  environment = {"tensorflow": tf.__version__, "formats": {}}
  for name in variant_formats:
    try:
      environment["formats"][name] = formats_lib.load_format(name).environment(options)
    except Exception as err:  # pylint: disable=broad-except
      environment["formats"][name] = {"error": _error_text(err)}
  # The TF-TRT facts stay at the top level too, where manifests of earlier releases had them.
  for key, value in environment["formats"].get("tftrt", {}).items():
    environment.setdefault(key, value)
  return environment


def run_export(request):
  """Freezes, builds and verifies one prepared export; returns the closed manifest.

  Every artifact ends `ok`, `skipped`, `failed` or `rejected` with a reason; an exception inside one step is
  recorded and the next step still runs. Only a dead process leaves `pending` behind, and the parent (or the
  next run) closes that as failed.
  """
  run = ExportRun(request)
  variants = [n for n in run.manifest["artifacts"] if formats_lib.is_variant(n)]
  variant_formats = list(dict.fromkeys(formats_lib.split_variant(n)[0] for n in variants))
  run.manifest["environment"] = _environment(request.options, variant_formats)
  run.save()
  started = time.monotonic()

  try:
    path, io = run.build_into_temp("frozen", lambda d: freeze_signature(run.job.native_dir, request.signature_key, d))
    run.record("frozen", OK, path, inputs=[i["tensor"] for i in io["inputs"]],
               outputs=[o["tensor"] for o in io["outputs"]], signature=io)
  except FreezeRefused as err:
    run.record("frozen", SKIPPED, reason=str(err))
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: freezing failed:\n%s", traceback.format_exc())
    run.record("frozen", FAILED, reason=_error_text(err))
  run.manifest["timings"]["freeze_seconds"] = round(time.monotonic() - started, 3)

  _build_variants(run, variants)

  if request.has_verification:
    from tftrt_keras import verification  # pylint: disable=g-import-not-at-top
    verification.verify_export(run)
  else:
    run.manifest["verification"] = {"skipped": "no held-out samples: the export has fewer than two captured "
                                               "samples, or no calibration data at all"}
    run.save()

  if request.options.triton_repository:
    _publish_triton(run)

  for name, entry in run.manifest["artifacts"].items():
    if entry["status"] == PENDING:  # a step that neither succeeded nor failed is a bug; never leave it open
      set_artifact(run.manifest, name, FAILED, reason="internal error: step did not record a result")
  run.manifest["timings"]["total_seconds"] = round(time.monotonic() - started, 3)
  run.save()
  return run.manifest


def _publish_triton(run):
  """Adds this export's servable ONNX and TensorRT variants to the Triton repository; never raises."""
  try:
    from tftrt_keras.serving import triton  # pylint: disable=g-import-not-at-top
    triton.publish_export(run)
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: publishing to the Triton repository failed:\n%s", traceback.format_exc())
    run.manifest.setdefault("serving", {})["triton"] = {"error": _error_text(err)}
  run.save()


def _signature_of(native_dir, signature_key):
  from tftrt_keras.saved_model_signature import load_signature  # pylint: disable=g-import-not-at-top
  loaded, _, info = load_signature(native_dir, signature_key)
  del loaded
  return {"inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]}


def _build_variants(run, variants):
  """Builds each pending variant from its source, in manifest order (sources come first)."""
  pending = [n for n in variants if run.manifest["artifacts"][n]["status"] == PENDING]
  if not pending:
    return
  try:
    run.job.signature = _signature_of(run.job.native_dir, run.request.signature_key)
  except Exception as err:  # pylint: disable=broad-except
    for name in pending:
      run.record(name, FAILED, reason=f"the normal export's signature could not be read: {_error_text(err)}")
    return
  unavailable = {}  # format -> (status, reason) when it cannot build here
  for name in pending:
    format_name, precision = formats_lib.split_variant(name)
    fmt = formats_lib.load_format(format_name)
    if format_name not in unavailable:
      try:
        reason = fmt.unavailable_reason(run.request.options)
        unavailable[format_name] = (SKIPPED, reason) if reason else None
      except Exception as err:  # pylint: disable=broad-except
        # Not a limit of this machine but a broken set-up (e.g. a `backend` module that does not import).
        logging.error("tftrt_keras: checking %s failed:\n%s", format_name, traceback.format_exc())
        unavailable[format_name] = (FAILED, f"could not tell whether {format_name} runs here: {_error_text(err)}")
    if unavailable[format_name]:
      status, reason = unavailable[format_name]
      run.record(name, status, reason=reason)
      continue
    source = fmt.source_of(precision)
    source_dir = run.artifact_dir(source)
    if source_dir is None:
      entry = run.manifest["artifacts"].get(source, {})
      why = f": {entry['reason']}" if entry.get("reason") else ""
      run.record(name, SKIPPED, reason=f"built from {source}, which is {entry.get('status', 'missing')}{why}")
      continue
    started = time.monotonic()
    try:
      path, details = run.build_into_temp(name, lambda d, f=fmt, p=precision, s=source_dir: f.build(run.job, p, s, d))
      details = dict(details or {})
      # A variant carries at most the outputs its source carries (trt_fp32 from an onnx_fp32 without strings).
      inherited = run.manifest["artifacts"].get(source, {}).get("outputs_left_out")
      if inherited:
        details["outputs_left_out"] = dict(inherited, **details.get("outputs_left_out", {}))
      run.record(name, OK, path, built_from=source, seconds=round(time.monotonic() - started, 3), **details)
    except VariantUnavailable as err:
      run.record(name, SKIPPED, reason=str(err))
    except VariantFailed as err:
      run.record(name, FAILED, reason=str(err), seconds=round(time.monotonic() - started, 3))
    except Exception as err:  # pylint: disable=broad-except
      logging.error("tftrt_keras: building %s failed:\n%s", name, traceback.format_exc())
      run.record(name, FAILED, reason=_error_text(err), seconds=round(time.monotonic() - started, 3))
