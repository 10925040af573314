"""Step 4 of an export: is each built artifact still the model, and how fast is it?

Runs in the export worker (loading a variant may load TensorRT). Each artifact runs through its format's
`Runner` on the held-out verification samples and is compared with the normal export output by output;
`tftrt_keras.agreement.judge` turns the figures into `ok`, `rejected` or `unverified` (with the reason), and
`follow_sources` passes a source's rejection or failure on to what was built from it. Latency is timed at batch
size 1 and the largest verification batch. Results go into the manifest, `report.md` and `latency.png`.
Verification never fails an export: an exception is recorded in `verification.error`, the artifact stays
`unverified`, and the next one is verified.
"""

import os
import time
import traceback

from absl import logging
import numpy as np

from tftrt_keras import formats as formats_lib
# The verdict rule lives in `agreement` (pure numpy) so that formats can judge candidates by it too; these names
# stay importable from here.
from tftrt_keras.agreement import (agreement_lower_bound, agreement_upper_bound, compare_output,  # noqa: F401
                                   is_classifier_like, judge, not_varying_words, one_class_words, output_variation,
                                   thresholds_for)
from tftrt_keras.formats.savedmodel import SavedModelRunner
from tftrt_keras.artifacts.layout import VERIFICATION_FILE
from tftrt_keras.artifacts.manifest import (FAILED, NOT_VERIFIED_YET, OK, REJECTED, SKIPPED, UNVERIFIED,
                                            USABLE_STATUSES)
from tftrt_keras.formats.base import RunnerUnavailable
from tftrt_keras.verify.split_runner import after_front
from tftrt_keras.task_metrics.judge import VariantMetrics

VERIFY_OFF = "verification turned off (verify=False)"
NO_SAMPLES = ("no held-out samples: the export has fewer than two captured samples, or no calibration data at "
              "all (give calibration_data, or capture validation batches)")

# Timed calls per batch size that `verify_latency_budget_seconds` never cuts (fewer only when
# `verify_timed_runs` is lower): a median and a p99 (their largest) of five calls.
MIN_TIMED_RUNS = 5

# Artifacts that are not models: nothing to run.
_NOT_RUNNABLE = frozenset({"native", "calibration", "front"})


# --- comparing outputs ---------------------------------------------------------------------------------------

def precision_of(artifact):
  """FP32/FP16/INT8 for a variant named `<format>_<precision>`, "frozen" for the frozen graph, else None."""
  if artifact == "frozen":
    return "frozen"
  try:
    return formats_lib.split_variant(artifact)[1]
  except ValueError:
    return None


# --- timing --------------------------------------------------------------------------------------------------

def measure_latency(call, warmup_runs, timed_runs, clock=time.perf_counter, budget_seconds=None,
                    min_timed_runs=MIN_TIMED_RUNS):
  """Times `call()`: the first call alone, then `warmup_runs` untimed calls, then up to `timed_runs` timed ones.

  Args:
    call: zero-argument callable that runs the model once and waits for its result.
    warmup_runs: untimed calls after the first.
    timed_runs: calls the median and p99 are taken over, at most.
    clock: seconds as a float (injectable for tests).
    budget_seconds: once timed calls have taken this long, stop after `min_timed_runs` (None: no budget).
    min_timed_runs: timed calls made whatever the budget (at most `timed_runs`).

  Returns:
    {"first_call_ms", "p50_ms", "p99_ms", "timed_runs"}.
  """
  start = clock()
  call()
  first = clock() - start
  for _ in range(warmup_runs):
    call()
  durations = []
  floor = min(min_timed_runs, timed_runs)
  for _ in range(timed_runs):
    start = clock()
    call()
    durations.append(clock() - start)
    if budget_seconds is not None and len(durations) >= floor and sum(durations) >= budget_seconds:
      break
  durations = np.array(durations) * 1000.0
  return {"first_call_ms": round(first * 1000.0, 4), "p50_ms": round(float(np.median(durations)), 4),
          "p99_ms": round(float(np.percentile(durations, 99)), 4), "timed_runs": len(durations)}


def _latency(runner, samples, batch_sizes, options):
  rows = []
  for size in batch_sizes:
    call = runner.prepared_call(_take(samples, 0, size))
    row = dict(batch_size=int(size), **measure_latency(call, options.verify_warmup_runs, options.verify_timed_runs,
                                                       budget_seconds=options.verify_latency_budget_seconds))
    row["samples_per_second"] = round(size / (row["p50_ms"] / 1000.0), 2) if row["p50_ms"] > 0 else None
    rows.append(row)
  return rows


# --- running artifacts ---------------------------------------------------------------------------------------

def _take(samples, start, size):
  return {name: value[start:start + size] for name, value in samples.items()}


def _num_samples(samples):
  return len(next(iter(samples.values())))


def _run_in_batches(runner, samples, batch_size):
  """Outputs for all samples, in batches no larger than the engines were built for."""
  parts = [runner.run(_take(samples, start, batch_size)) for start in range(0, _num_samples(samples), batch_size)]
  return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}


# --- the step ------------------------------------------------------------------------------------------------

def _error_text(err):
  return f"{type(err).__name__}: {err}".strip()


def _largest_batch(run, total):
  """The largest verification batch: what the variants were built to serve (`max_batch_size`, else the
  largest captured batch), capped by the samples there are."""
  size = run.request.options.max_batch_size or max(run.request.calibration_batch_sizes or [total])
  return max(1, min(size, total))


def _runnable_artifacts(run):
  """(name, directory) of every built artifact that is a model: the frozen graph and the usable variants."""
  for name, entry in run.manifest["artifacts"].items():
    if name in _NOT_RUNNABLE or entry.get("status") not in USABLE_STATUSES or not entry.get("path"):
      continue
    yield name, run.layout.resolve(run.request.version, entry["path"])


def _open_runner(name, path, run, load_format):
  """The runner for one artifact (`formats.open_runner`), behind the TF front where it runs after one."""
  runner = formats_lib.open_runner(name, path, run.job, load=load_format)
  return after_front(runner, run.manifest["artifacts"][name], run)


def _set_status(entry, status, reason):
  entry["status"] = status
  if reason:
    entry["reason"] = reason
  else:
    entry.pop("reason", None)


def source_reason(source, entry):
  """Why a variant built from `source` (its manifest `entry`, None when absent) is not usable: "built from
  onnx_int8, which was rejected: <its reason>"."""
  status = (entry or {}).get("status", "missing")
  verb = {REJECTED: "was rejected", FAILED: "failed", SKIPPED: "was skipped"}.get(status, f"is {status}")
  return f"built from {source}, which {verb}" + (f": {entry['reason']}" if (entry or {}).get("reason") else "")


def follow_sources(manifest):
  """A variant built from a `rejected` source ends `rejected`; one from a `failed` or missing source, `skipped`.

  Repeated until nothing changes, so a chain follows its first unusable link.

  Returns:
    The names whose status changed, in the order they changed.
  """
  artifacts, changed = manifest["artifacts"], []
  moved = True
  while moved:
    moved = False
    for name, entry in artifacts.items():
      source = entry.get("built_from")
      if not source or entry.get("status") in (SKIPPED, FAILED) or name in changed:
        continue
      if str(entry.get("reason") or "").startswith(f"built from {source}, which "):
        continue  # followed its source already (an earlier call)
      source_entry = artifacts.get(source)
      if source_entry is not None and source_entry.get("status") in USABLE_STATUSES:
        continue
      reason = source_reason(source, source_entry)
      if entry.get("status") == REJECTED and entry.get("reason"):
        reason = f"{reason}; {entry['reason']}"
      _set_status(entry, REJECTED if (source_entry or {}).get("status") == REJECTED else SKIPPED, reason)
      changed.append(name)
      moved = True
  return changed


def _leave_unverified(run, reason):
  """Every built artifact that is a model stays `unverified`, with `reason`."""
  for name, _ in list(_runnable_artifacts(run)):
    _set_status(run.manifest["artifacts"][name], UNVERIFIED, reason)


def _usable(run):
  return [name for name, entry in run.manifest["artifacts"].items()
          if name != "calibration" and entry.get("status") in USABLE_STATUSES]


def _unverified(run):
  return [name for name, entry in run.manifest["artifacts"].items() if entry.get("status") == UNVERIFIED]


def verify_export(run, clock=time.monotonic, load_format=formats_lib.load_format):
  """Verifies and times every built artifact of `run` (a `pipeline.ExportRun`); never raises an Exception.

  Updates and saves `run.manifest` (statuses, `artifacts[name]["verification"]`, a top-level summary) and writes
  `report.md` and `latency.png`; without verification every built artifact stays `unverified` with the reason.

  Args:
    run: the export's `pipeline.ExportRun`.
    clock: seconds as a float (injectable for tests).
    load_format: format name -> `Format` whose runner verifies that format's variants (injectable for tests).

  Returns:
    The summary stored in `run.manifest["verification"]`.
  """
  options = run.request.options
  started = clock()
  skipped = VERIFY_OFF if not options.verify else (None if run.request.has_verification else NO_SAMPLES)
  if skipped:
    _leave_unverified(run, skipped)
    follow_sources(run.manifest)
    summary = {"skipped": skipped, "servable": _usable(run), "unverified": _unverified(run)}
    run.manifest["verification"] = summary
    run.save()
    return summary
  summary = {"samples": 0, "batch_sizes": [], "warmup_runs": options.verify_warmup_runs,
             "timed_runs": options.verify_timed_runs, "min_timed_runs": min(MIN_TIMED_RUNS, options.verify_timed_runs),
             "latency_budget_seconds": options.verify_latency_budget_seconds,
             "servable": [], "rejected": [], "unverified": []}
  run.manifest["verification"] = summary
  try:
    _verify_all(run, summary, load_format)
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: verification failed:\n%s", traceback.format_exc())
    summary["error"] = _error_text(err)
  for name, _ in list(_runnable_artifacts(run)):  # what verification never reached (it stopped before them)
    entry = run.manifest["artifacts"][name]
    if entry.get("reason") == NOT_VERIFIED_YET:
      _set_status(entry, UNVERIFIED, f"verification could not run: {summary.get('error', 'it stopped early')}")
  _follow_sources(run, summary)
  summary["servable"], summary["unverified"] = _usable(run), _unverified(run)
  _write_report(run, summary)
  # Measured after the report: drawing the chart (importing matplotlib) is part of what verification costs.
  summary["seconds"] = round(clock() - started, 3)
  run.manifest.setdefault("timings", {})["verify_seconds"] = summary["seconds"]
  run.save()
  return summary


def _follow_sources(run, summary):
  for name in follow_sources(run.manifest):
    if run.manifest["artifacts"][name]["status"] == REJECTED and name not in summary["rejected"]:
      summary["rejected"].append(name)


def _write_report(run, summary):
  try:
    from tftrt_keras.verify import report  # pylint: disable=g-import-not-at-top
    written = report.write_report(run.manifest, run.directory)
    summary.update({key: os.path.basename(path) for key, path in written.items()})
  except Exception as err:  # pylint: disable=broad-except
    logging.error("tftrt_keras: writing the verification report failed:\n%s", traceback.format_exc())
    summary["report_error"] = _error_text(err)


def _verify_all(run, summary, load_format):
  request, options = run.request, run.request.options
  samples = run.samples(VERIFICATION_FILE)
  total = _num_samples(samples)
  batch = _largest_batch(run, total)
  batch_sizes = sorted({1, batch})
  summary.update(samples=total, batch_sizes=batch_sizes)

  native_entry = run.manifest["artifacts"]["native"]
  native = SavedModelRunner(run.layout.path("native", request.version), request.signature_key)
  try:
    native_entry["verification"] = {"samples": total, "latency": _latency(native, samples, batch_sizes, options)}
    reference = _run_in_batches(native, samples, batch)
  finally:
    native.close()
  # How much the reference varies decides whether any artifact can be judged on it: said once, here.
  variation = {key: output_variation(value) for key, value in sorted(reference.items())}
  native_entry["verification"]["output_variation"] = {key: value for key, value in variation.items() if value}
  own_metrics = VariantMetrics(run.manifest, run.samples, reference, options.max_metric_drop)
  not_varying, one_class = not_varying_words(variation), one_class_words(variation)
  if not_varying:
    summary["outputs_not_varying"] = not_varying
  if one_class:
    summary["outputs_one_class"] = one_class
  run.save()

  for name, path in list(_runnable_artifacts(run)):
    entry = run.manifest["artifacts"][name]
    _follow_sources(run, summary)
    if entry["status"] not in USABLE_STATUSES:
      continue  # built from an artifact verification rejected: nothing it could show would make it usable
    try:
      entry["verification"] = _verify_artifact(name, path, run, samples, reference, batch, batch_sizes,
                                               (not_varying, one_class), load_format, own_metrics)
    except RunnerUnavailable as err:
      entry["verification"] = {"runner_unavailable": str(err)}
      _set_status(entry, UNVERIFIED, str(err))
    except Exception as err:  # pylint: disable=broad-except
      logging.error("tftrt_keras: verifying %s failed:\n%s", name, traceback.format_exc())
      entry["verification"] = {"error": _error_text(err)}
      _set_status(entry, UNVERIFIED, f"verification could not run: {_error_text(err)}")
    else:
      _set_status(entry, entry["verification"]["verdict"], entry["verification"]["reason"])
      if entry["status"] == REJECTED:
        summary["rejected"].append(name)
    run.save()


def _trained_in_low_precision(artifacts, name):
  """Whether the entry of `name`, or of the variant it was built from, says its model computes with mixed
  precision (`mixed_precision`, written by the ONNX format from the graph)."""
  seen = set()
  while name in artifacts and name not in seen:
    seen.add(name)
    if artifacts[name].get("mixed_precision"):
      return True
    name = artifacts[name].get("built_from")
  return False


def _verify_artifact(name, path, run, samples, reference, batch, batch_sizes, cannot_tell, load_format,
                     own_metrics=None):
  request = run.request
  precision = label = precision_of(name)
  thresholds = thresholds_for(precision, request.options)
  if precision == "FP32" and _trained_in_low_precision(run.manifest["artifacts"], name):
    # The normal export itself rounds in float16/bfloat16: an FP32 variant differs from it by that rounding (up
    # to 1.5e-3 of the output in float16, 7e-3 in bfloat16, on the tests' models), past FP32's tolerance.
    thresholds.update(max_relative_error=max(thresholds["max_relative_error"], request.options.verify_tolerance_fp16),
                      tolerance_of="FP16: the model was trained with mixed precision and rounds as float16/bfloat16")
    label = "FP16"
  runner = _open_runner(name, path, run, load_format)
  try:
    # Latency first: the very first call is the one where TF-TRT builds engines it did not prebuild.
    latency = _latency(runner, samples, batch_sizes, request.options)
    outputs = _run_in_batches(runner, samples, batch)
  finally:
    runner.close()
  # A variant may leave out outputs its format cannot carry, saying so in its manifest entry (ONNX: strings).
  left_out = set(run.manifest["artifacts"][name].get("outputs_left_out") or ())
  missing = sorted(set(reference) - set(outputs) - left_out)
  figures = {key: compare_output(reference[key], outputs[key]) for key in sorted(reference) if key in outputs}
  verdict, reason = judge(label, figures, thresholds, *cannot_tell)  # (not varying, one class)
  if missing:
    missing_text = f"outputs missing: {', '.join(missing)}"
    reason = (reason + "; " + missing_text if verdict == REJECTED else "verification failed: " + missing_text)
    verdict = REJECTED
  if own_metrics is not None:  # the model's own metrics on these same outputs, and `max_metric_drop`
    verdict, reason = own_metrics.judge(name, outputs, verdict, reason, path=path)
  return {"samples": _num_samples(samples), "precision": precision, "thresholds": thresholds, "outputs": figures,
          "verdict": verdict, "passed": verdict == OK, "reason": reason, "latency": latency}
