"""The worker's half of one export (in the export worker and the offline exporter alike): freeze, build each
variant from its source (see `tftrt_keras.formats`), verify, publish to serving, and close the manifest. The
trainer's half is `pipeline.prepare`."""

import os
import shutil
import time
import traceback

from absl import logging

from tftrt_keras import formats as formats_lib
from tftrt_keras.artifacts.layout import CALIBRATION_FILE, ExportLayout
from tftrt_keras.artifacts.manifest import (FAILED, NOT_VERIFIED_YET, PENDING, SKIPPED, UNVERIFIED, USABLE_STATUSES,
                                            read_manifest, set_artifact, write_manifest)
from tftrt_keras.formats.base import NATIVE, BuildJob, VariantFailed, VariantUnavailable
from tftrt_keras.formats.frozen import FreezeRefused, freeze_signature
from tftrt_keras.pipeline.split import plan_front, point_job_at_back
from tftrt_keras.samples import calibration_data


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
    """Absolute directory of a built, usable artifact (`ok` or `unverified`), else None."""
    entry = self.manifest["artifacts"].get(name, {})
    if entry.get("status") not in USABLE_STATUSES or not entry.get("path"):
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


# Raised by code that is wrong, not by a model a converter cannot take: reported as a bug, not a routine failure.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError)
INTERNAL_ERROR = "internal error (a bug in tftrt_keras, please report): "


def _error_text(err):
  return f"{type(err).__name__}: {err}".strip()


def build_failure_reason(err):
  """The `failed` reason for an exception a format's build raised: a programming error says it is a bug."""
  return (INTERNAL_ERROR if isinstance(err, PROGRAMMING_ERRORS) else "") + _error_text(err)


def _environment(options, variant_formats):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  environment = {"tensorflow": tf.__version__, "formats": {}}
  for name in variant_formats:
    try:
      environment["formats"][name] = formats_lib.load_format(name).environment(options)
    except Exception as err:  # pylint: disable=broad-except
      environment["formats"][name] = {"error": _error_text(err)}
  return environment


def run_export(request):
  """Freezes, builds and verifies one prepared export; returns the closed manifest.

  An exception inside one step is recorded and the next step still runs; only a dead process leaves `pending`,
  which the parent (or the next run) closes as failed.
  """
  run = ExportRun(request)
  variants = [n for n in run.manifest["artifacts"] if formats_lib.is_variant(n)]
  variant_formats = list(dict.fromkeys(formats_lib.split_variant(n)[0] for n in variants))
  run.manifest["environment"] = _environment(request.options, variant_formats)
  run.save()
  started = time.monotonic()

  try:
    path, io = run.build_into_temp("frozen", lambda d: freeze_signature(run.job.native_dir, request.signature_key, d))
    run.record("frozen", UNVERIFIED, path, reason=NOT_VERIFIED_YET, inputs=[i["tensor"] for i in io["inputs"]],
               outputs=[o["tensor"] for o in io["outputs"]], signature=io)
    plan_front(run, path)
  except FreezeRefused as err:
    run.record("frozen", SKIPPED, reason=str(err))
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: freezing failed:\n%s", traceback.format_exc())
    run.record("frozen", FAILED, reason=_error_text(err))
  run.manifest["timings"]["freeze_seconds"] = round(time.monotonic() - started, 3)

  _build_variants(run, variants)

  from tftrt_keras.verify import verification  # pylint: disable=g-import-not-at-top
  verification.verify_export(run)  # also when it cannot run: it records why the artifacts stay unverified

  if request.options.triton_repository:
    _publish_triton(run)

  for name, entry in run.manifest["artifacts"].items():
    if entry["status"] == PENDING:  # a step that neither succeeded nor failed is a bug; never leave it open
      set_artifact(run.manifest, name, FAILED, reason="internal error: step did not record a result")
  run.manifest["timings"]["total_seconds"] = round(time.monotonic() - started, 3)
  run.save()
  return run.manifest


def _publish_triton(run):
  """Adds this export's usable ONNX and TensorRT variants to the Triton repository, records the outcome as a
  status (`failed` makes `tftrt-export` exit 1) and adds it to report.md; never raises."""
  try:
    from tftrt_keras.serving import triton  # pylint: disable=g-import-not-at-top
    triton.publish_export(run)
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: publishing to the Triton repository failed:\n%s", traceback.format_exc())
    run.manifest.setdefault("serving", {})["triton"] = {
        "repository": os.path.abspath(os.fspath(run.request.options.triton_repository)), "status": FAILED,
        "reason": f"publishing to the Triton repository failed: {_error_text(err)}"}
  record = run.manifest["serving"]["triton"]
  if record.get("status") == FAILED:
    logging.error("tftrt_keras: export %s: Triton: %s", run.request.version, record["reason"])
  run.save()
  try:
    from tftrt_keras.verify import report  # pylint: disable=g-import-not-at-top
    report.write_report(run.manifest, run.directory, redraw=False)  # verification wrote it before serving ran
  except Exception:  # pylint: disable=broad-except
    logging.error("tftrt_keras: adding serving to report.md failed:\n%s", traceback.format_exc())


def _signature_of(native_dir, signature_key):
  from tftrt_keras.formats.signature import load_signature  # pylint: disable=g-import-not-at-top
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
    point_job_at_back(run)
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
        # Not a limit of this machine but a broken set-up (e.g. a converter module that does not import).
        logging.error("tftrt_keras: checking %s failed:\n%s", format_name, traceback.format_exc())
        unavailable[format_name] = (FAILED, f"could not tell whether {format_name} runs here: {_error_text(err)}")
    if unavailable[format_name]:
      status, reason = unavailable[format_name]
      run.record(name, status, reason=reason)
      continue
    source = fmt.source_of(precision)
    source_dir = run.artifact_dir(source)
    if source_dir is None:
      from tftrt_keras.verify.verification import source_reason  # pylint: disable=g-import-not-at-top
      run.record(name, SKIPPED, reason=source_reason(source, run.manifest["artifacts"].get(source)))
      continue
    started = time.monotonic()
    try:
      path, details = run.build_into_temp(name, lambda d, f=fmt, p=precision, s=source_dir: f.build(run.job, p, s, d))
      details = dict(details or {})
      # A variant carries at most the outputs its source carries (trt_fp32 from an onnx_fp32 without strings).
      inherited = run.manifest["artifacts"].get(source, {}).get("outputs_left_out")
      if inherited:
        details["outputs_left_out"] = dict(inherited, **details.get("outputs_left_out", {}))
      if run.manifest["artifacts"].get(source, {}).get("after_front"):  # built on a split model's back
        details["after_front"] = run.manifest["artifacts"][source]["after_front"]
      run.record(name, UNVERIFIED, path, reason=NOT_VERIFIED_YET, built_from=source,
                 seconds=round(time.monotonic() - started, 3), **details)
    except VariantUnavailable as err:
      run.record(name, SKIPPED, reason=str(err))
    except VariantFailed as err:
      run.record(name, FAILED, reason=str(err), seconds=round(time.monotonic() - started, 3))
    except Exception as err:  # pylint: disable=broad-except
      # The traceback goes to worker.log; the manifest keeps the one line.
      logging.error("tftrt_keras: building %s failed:\n%s", name, traceback.format_exc())
      run.record(name, FAILED, reason=build_failure_reason(err), seconds=round(time.monotonic() - started, 3))
