#!/usr/bin/env python
"""The zoo through `TrtExport` (issue 19 point 4): every format, one table, ours beside NVIDIA ModelOpt.

  nice -n 15 .venv/tf2.21/bin/python benchmarks/bench_zoo.py \
      [--models=MobileNetV2,TransformerBlock --work_dir=/tmp/bench_zoo --modelopt_python=/tmp/modelopt-venv/bin/python]

(from the repository root; the ModelOpt environment as benchmarks/README.md says under bench_int8_quality.py).

Each architecture of tests/zoo_models.py (keras.applications with weights=None at 32x32x3, a Transformer block
with exact GELU, Embedding + Bidirectional(LSTM); scikit-learn's digits upsampled to 32x32x3 or read as 64
pixel tokens; 1100 training / 697 validation samples) is trained for its epochs. All but the last epoch are
trained once and cached in `--work_dir` (`<model>/pretrained.keras`, optimizer state included); the last epoch
is always a `model.fit(..., validation_data=..., callbacks=[TrtExport(formats=--formats,
precisions=FP32,FP16,INT8)])` with the callback's defaults otherwise: one export at the end of that epoch
(save_freq="epoch"), calibration and verification samples captured from that validation pass exactly as a
user's run captures them, the conversion worker in the background and `fit` waiting for it at its end. A
second run therefore skips training but makes a new export (with whatever formats the code has by then);
`--reuse_export` only re-reads the newest export (ModelOpt's figures are kept per export version).

The table reads the export's manifest: per format the status of each precision, seconds and file sizes of
each variant, FP16 max relative error and top-1 agreement, INT8 top-1 agreement and its one-sided 95% Wilson
lower bound (judged against `verify_min_agreement`, 0.97), what the INT8 fallback did (the calibration chosen,
whether it searched, top-1 agreement and bound on its hold-out before -> after, the nodes it kept FP32 of those
quantizable, the samples the shipped model was calibrated on), the worker's seconds (the manifest's `timings`:
freeze / the variants / verify = total; and the wall time from the export's submission to the end of `fit`'s wait,
worker start-up included) against the seconds the callback took to write the normal SavedModel (measured here
around `SavedModelSnapshotter.save`: nothing records it). For the CNNs, ModelOpt's INT8
(`bench_int8_quality._modelopt`: its CLI, max and entropy calibration, FP32 high precision) quantizes the same
`onnx_fp32/<version>/model.onnx` with the same `calibration.npz` the export wrote, and is judged as our
verification judges `onnx_int8`: top-1 agreement with the normal export (the SavedModel in TensorFlow) on the same
`verification.npz`. Formats other than `onnx` (`trt`, `trt_rtx`, `tftrt`) get a column each, whatever statuses the
manifest gives them.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tftrt_keras import quiet_console  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
# Fast ones first; ConvNeXtTiny and ResNet50 take most of the run on 2 cores.
DEFAULT_MODELS = ["MobileNetV3Small", "MobileNetV2", "EfficientNetB0", "EfficientNetV2B0", "TransformerBlock",
                  "EmbeddingBiLSTM", "ConvNeXtTiny", "ResNet50"]
flags.DEFINE_list("models", DEFAULT_MODELS, "tests/zoo_models.ARCHITECTURES names, in the order to run them.")
flags.DEFINE_string("work_dir", "/tmp/bench_zoo", "Cached trained models (all but the last epoch) and the exports.")
flags.DEFINE_string("formats", "auto", "TrtExport's `formats`: 'auto' or a comma-separated subset.")
flags.DEFINE_list("precisions", ["FP32", "FP16", "INT8"], "TrtExport's `precisions`.")
# bench_int8_quality's ModelOpt runner reads FLAGS.modelopt_python: absl's flags are one global set.
flags.DEFINE_string("modelopt_python", "", "Python of the nvidia-modelopt[onnx] environment; empty: ours only.")
flags.DEFINE_bool("reuse_export", False, "Read the newest export in --work_dir instead of running the last epoch.")
flags.DEFINE_bool("retrain", False, "Ignore cached trained models.")
flags.DEFINE_integer("timeout_seconds", 3600, "TrtExport's timeout_seconds (per export worker).")
flags.DEFINE_string("json_out", "", "Also write the rows as JSON here.")

MODELOPT = {"max": ["--calibration_method=max", "--high_precision_dtype=fp32"],
            "entropy": ["--calibration_method=entropy", "--high_precision_dtype=fp32"]}
PRECISION_ORDER = ("fp32", "fp16", "int8")


# --- training and the export ----------------------------------------------------------------------------------

def _keras():
  from tests import keras_models  # pylint: disable=g-import-not-at-top
  return keras_models.keras_for(keras_models.flavors()[0])


def _data(architecture):
  from tests import zoo_models  # pylint: disable=g-import-not-at-top
  (train_images, y_train), (val_images, y_val) = zoo_models.digits_split()
  return (zoo_models.inputs_for(architecture, train_images), y_train,
          zoo_models.inputs_for(architecture, val_images), y_val)


def _pretrained(name, root):
  """The model after all but its last epoch, from the cache or trained now; (model, cached?, seconds)."""
  from tests import zoo_models  # pylint: disable=g-import-not-at-top
  keras = _keras()
  architecture, _ = zoo_models.ARCHITECTURES[name]
  path, info_path = os.path.join(root, "pretrained.keras"), os.path.join(root, "pretrained.json")
  cached = os.path.exists(path) and os.path.exists(info_path) and not FLAGS.retrain
  if not cached:
    os.makedirs(root, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = zoo_models.build(keras, name)
    x, y, _, _ = _data(architecture)
    start = time.perf_counter()
    if architecture.epochs > 1:
      model.fit(x, y, epochs=architecture.epochs - 1, batch_size=32, verbose=0)
    else:
      model.optimizer.build(model.trainable_variables)
    with open(info_path, "w", encoding="utf-8") as f:
      json.dump({"epochs": architecture.epochs - 1, "seconds": time.perf_counter() - start}, f)
    model.save(path)
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  keras.utils.set_random_seed(1)
  return keras.models.load_model(path), cached, info["seconds"]


class _SaveTimer:
  """Times the callback's SavedModel snapshots (tracing the serving function, and each `save`) in place."""

  def __init__(self):
    from tftrt_keras.keras import snapshot  # pylint: disable=g-import-not-at-top
    self.cls = snapshot.SavedModelSnapshotter
    self.trace_seconds, self.save_seconds = [], []

  def __enter__(self):
    cls, timer = self.cls, self
    self._init, self._save = cls.__init__, cls.save

    def init(snapshotter, *args, **kwargs):
      start = time.perf_counter()
      timer._init(snapshotter, *args, **kwargs)  # pylint: disable=protected-access
      timer.trace_seconds.append(time.perf_counter() - start)

    def save(snapshotter, directory):
      start = time.perf_counter()
      timer._save(snapshotter, directory)  # pylint: disable=protected-access
      timer.save_seconds.append(time.perf_counter() - start)
    cls.__init__, cls.save = init, save
    return self

  def __exit__(self, *exc):
    self.cls.__init__, self.cls.save = self._init, self._save


def _timed_trtexport(**kwargs):
  """A TrtExport that notes how long `fit` was held by the export and how long it then waited for the worker."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top

  class TimedTrtExport(tftrt_keras.TrtExport):

    timings = {}

    def on_epoch_end(self, epoch, logs=None):
      start = time.perf_counter()
      super().on_epoch_end(epoch, logs)
      self.timings["export_in_fit"] = time.perf_counter() - start
      self.timings["submitted"] = time.perf_counter()

    def on_train_end(self, logs=None):
      super().on_train_end(logs)
      if "submitted" in self.timings:
        self.timings["worker_wall"] = time.perf_counter() - self.timings["submitted"]

  callback = TimedTrtExport(**kwargs)
  callback.timings = {}
  return callback


def _export(name, root):
  """Runs the last epoch with TrtExport; returns facts about the run (manifest path, accuracy, timings)."""
  from tests import zoo_models  # pylint: disable=g-import-not-at-top
  architecture, _ = zoo_models.ARCHITECTURES[name]
  model, cached, pretrain_seconds = _pretrained(name, root)
  x, y, x_val, y_val = _data(architecture)
  formats = FLAGS.formats if FLAGS.formats == "auto" else tuple(FLAGS.formats.split(","))
  callback = _timed_trtexport(export_dir=os.path.join(root, "export"), formats=formats,
                              precisions=tuple(FLAGS.precisions), timeout_seconds=FLAGS.timeout_seconds,
                              exports_to_keep=3)
  load = os.getloadavg()[0]
  start = time.perf_counter()
  with _SaveTimer() as saves:
    history = model.fit(x, y, initial_epoch=architecture.epochs - 1, epochs=architecture.epochs, batch_size=32,
                        validation_data=(x_val, y_val), callbacks=[callback], verbose=0)
  if not callback.manifest_paths:
    raise RuntimeError(f"{name}: TrtExport wrote no manifest")
  facts = {"manifest": callback.manifest_paths[-1], "val_accuracy": float(history.history["val_accuracy"][-1]),
           "pretrained_cached": cached, "pretrain_seconds": pretrain_seconds,
           "last_epoch_seconds": time.perf_counter() - start - callback.timings.get("worker_wall", 0.0),
           "trace_seconds": sum(saves.trace_seconds), "save_seconds": sum(saves.save_seconds),
           "export_in_fit_seconds": callback.timings.get("export_in_fit"),
           "worker_wall_seconds": callback.timings.get("worker_wall"),
           "load_before": load, "load_after": os.getloadavg()[0]}
  with open(os.path.join(root, "last_run.json"), "w", encoding="utf-8") as f:
    json.dump(facts, f, indent=1)
  return facts


def _reused(root):
  with open(os.path.join(root, "last_run.json"), encoding="utf-8") as f:
    return json.load(f)


# --- ModelOpt on the export's own files -----------------------------------------------------------------------

def _samples(manifest_dir, manifest, key):
  """{input name: array} of the export's calibration.npz ("file") or verification.npz ("verification_file")."""
  entry = manifest["artifacts"]["calibration"]
  path = os.path.join(manifest_dir, entry["path"], entry[key])
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def _run_onnx(path, feeds):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
  total = len(next(iter(feeds.values())))
  parts = [session.run(None, {k: v[i:i + 64] for k, v in feeds.items()}) for i in range(0, total, 64)]
  names = [o.name for o in session.get_outputs()]
  return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


def _modelopt_rows(manifest_dir, manifest, root):
  """{method: {"agreement", "bound", "samples", "seconds"} or {"error"}} for ModelOpt max and entropy."""
  import bench_int8_quality  # pylint: disable=g-import-not-at-top
  from tftrt_keras import agreement  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.savedmodel import SavedModelRunner  # pylint: disable=g-import-not-at-top
  artifacts = manifest["artifacts"]
  if artifacts.get("onnx_fp32", {}).get("status") not in ("ok", "unverified", "rejected"):
    return {m: {"error": "no onnx_fp32"} for m in MODELOPT}
  fp32 = os.path.join(manifest_dir, artifacts["onnx_fp32"]["path"], "model.onnx")
  calibration = _samples(manifest_dir, manifest, "file")
  verification = _samples(manifest_dir, manifest, "verification_file")
  if len(calibration) != 1:
    return {m: {"error": "ModelOpt's CLI takes one input here"} for m in MODELOPT}
  (name, samples), = calibration.items()
  scratch = os.path.join(root, "modelopt", str(manifest["version"]))
  results_path = os.path.join(scratch, "results.json")
  if os.path.exists(results_path):  # this export's files were quantized and judged already
    with open(results_path, encoding="utf-8") as f:
      return json.load(f)
  os.makedirs(scratch, exist_ok=True)
  with SavedModelRunner(os.path.join(manifest_dir, artifacts["native"]["path"]),
                        manifest.get("signature_key", "serving_default")) as runner:
    reference = {}
    total = len(verification[name])
    for i in range(0, total, 64):
      for key, value in runner.run({name: verification[name][i:i + 64]}).items():
        reference.setdefault(key, []).append(value)
    reference = {k: np.concatenate(v) for k, v in reference.items()}
  rows = {}
  for method, extra in MODELOPT.items():
    path, seconds, why = bench_int8_quality._modelopt(  # pylint: disable=protected-access
        fp32, scratch, name, samples, f"ModelOpt {method}", extra)
    if path is None:
      rows[method] = {"error": why, "seconds": seconds}
      continue
    outputs = _run_onnx(path, verification)
    key = next(k for k in reference if k in outputs)
    agreeing = int(np.sum(reference[key].argmax(1) == outputs[key].argmax(1)))
    rows[method] = {"agreement": agreeing / total, "bound": agreement.agreement_lower_bound(agreeing, total),
                    "samples": total, "seconds": seconds}
  if all("agreement" in r for r in rows.values()):
    with open(results_path, "w", encoding="utf-8") as f:
      json.dump(rows, f)
  return rows


# --- reading the manifest -------------------------------------------------------------------------------------

def _variants(manifest):
  """{format: {precision: entry}} for every `<format>_<fp32|fp16|int8>` artifact, formats in manifest order
  (read from the manifest itself, so formats this code does not know, such as `trt_rtx`, show too)."""
  found = {}
  for artifact, entry in manifest["artifacts"].items():
    fmt, _, precision = artifact.rpartition("_")
    if fmt and precision in PRECISION_ORDER:
      found.setdefault(fmt, {})[precision] = entry
  return found


def _size(manifest_dir, entry):
  """Bytes of the variant's model file (model.onnx, model.plan; else the whole directory), or None."""
  if not entry.get("path"):
    return None
  directory = os.path.join(manifest_dir, entry["path"])
  if not os.path.isdir(directory):
    return None
  for name in ("model.onnx", "model.plan"):
    if os.path.exists(os.path.join(directory, name)):
      return os.path.getsize(os.path.join(directory, name))
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


def _model_json(manifest_dir, entry):
  path = os.path.join(manifest_dir, entry.get("path") or "", "model.json")
  if not entry.get("path") or not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _figures(entry):
  """The verification figures of the first (only) output, or {}."""
  outputs = (entry.get("verification") or {}).get("outputs") or {}
  return next(iter(outputs.values()), {})


def _row(name, facts, modelopt):
  manifest_dir = os.path.dirname(facts["manifest"])
  with open(facts["manifest"], encoding="utf-8") as f:
    manifest = json.load(f)
  variants = _variants(manifest)
  row = {"model": name, "version": manifest["version"], "val_accuracy": facts["val_accuracy"],
         "facts": facts, "timings": manifest.get("timings", {}), "formats": {}, "modelopt": modelopt,
         "reasons": {}, "calibration": manifest["artifacts"].get("calibration", {})}
  for fmt, by_precision in variants.items():
    row["formats"][fmt] = {}
    for precision, entry in by_precision.items():
      artifact = f"{fmt}_{precision}"
      cell = {"status": entry["status"], "seconds": entry.get("seconds"), "bytes": _size(manifest_dir, entry),
              "figures": _figures(entry)}
      if precision == "int8" and "int8_fallback" in entry:
        cell["fallback"] = entry["int8_fallback"]
        cell["calibration"] = entry.get("calibration")
        cell["int8_kept_fp32"] = entry.get("int8_kept_fp32")
        cell["calibration_samples"] = entry.get("calibration_samples")
        cell["nodes_quantizable"] = _model_json(manifest_dir, entry).get("int8", {}).get("fallback", {}).get(
            "nodes_quantizable")
      row["formats"][fmt][precision] = cell
      if entry["status"] != "ok" and entry.get("reason"):
        row["reasons"][artifact] = (entry["status"], entry["reason"])
      elif (entry.get("verification") or {}).get("error"):
        row["reasons"][artifact] = (entry["status"], "verification error: " + entry["verification"]["error"])
  for artifact in ("native", "frozen", "calibration"):
    entry = manifest["artifacts"].get(artifact, {})
    if entry.get("status") not in (None, "ok"):
      row["reasons"][artifact] = (entry["status"], entry.get("reason"))
  return row


# --- the table ------------------------------------------------------------------------------------------------

def _holdout(outputs):
  """'agreement (bound)' of the fallback's hold-out figures, or None."""
  figures = next(iter((outputs or {}).values()), {})
  if "top1_agreement" not in figures:
    return None
  return f"{figures['top1_agreement']:.3f} ({figures['top1_agreement_lower_bound']:.3f})"


def _f(value, spec, missing="-"):
  return missing if value is None else format(value, spec)


def _agreement_cell(figures):
  if "top1_agreement" not in figures:
    return "-"
  return f"{figures['top1_agreement']:.3f} ({figures['top1_agreement_lower_bound']:.3f})"


def _fallback_cell(cell):
  fallback = cell.get("fallback")
  if not fallback:
    return "-"
  before, after = _holdout(fallback.get("holdout_before")), _holdout(fallback.get("holdout_after"))
  kept = [k for k in (cell.get("int8_kept_fp32") or {})]
  text = f"{cell.get('calibration') or '?'}; {'searched' if fallback['searched'] else 'not searched'}"
  if before is not None:
    text += f"; {before} -> {after or '-'}" if fallback["searched"] else f"; {before}"
  text += f"; kept {fallback['kept']}" + (f"/{cell['nodes_quantizable']}" if cell.get("nodes_quantizable") else "")
  if len(kept) > fallback["kept"]:
    text += f" (+{len(kept) - fallback['kept']} small GEMM)"
  if cell.get("calibration_samples"):
    text += f"; shipped calibrated on {cell['calibration_samples']}"
  return text


def _modelopt_cell(modelopt, method):
  entry = (modelopt or {}).get(method)
  if not entry:
    return "-"
  if "error" in entry:
    return "failed"
  return f"{entry['agreement']:.3f} ({entry['bound']:.3f})"


def _triple(cells, key):
  return " / ".join(key(cells[p]) if p in cells else "-" for p in PRECISION_ORDER)


def _mb(size):
  return "-" if size is None else f"{size / 1e6:.1f}"


def table(rows):
  """The markdown table (one line per model) and the notes under it."""
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  gate = ConversionOptions().verify_min_agreement
  other = list(dict.fromkeys(f for r in rows for f in r["formats"] if f != "onnx"))
  header = ["model (val acc)", "onnx fp32 / fp16 / int8", "onnx s", "onnx MB", "FP16 max rel err, top-1",
            "INT8 top-1 (bound), n", "INT8: calibration; fallback; hold-out agreement (bound) before -> after; kept FP32 / quantizable",
            "ModelOpt max (bound)", "ModelOpt entropy (bound)", "ours vs ModelOpt best"]
  header += [f"{f} fp32 / fp16 / int8: status, s, MB" for f in other]
  header += ["worker s: freeze / variants / verify = total (wall)", "SavedModel write s (trace)", "worker / write"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = {}  # (artifact or format, status, reason) -> models; one line per distinct reason
  for r in rows:
    onnx = r["formats"].get("onnx", {})
    fp16 = (onnx.get("fp16") or {}).get("figures", {})
    int8 = onnx.get("int8") or {}
    int8_figures = int8.get("figures", {})
    cells = [f"{r['model']} ({r['val_accuracy']:.3f})",
             _triple(onnx, lambda c: c["status"]),
             _triple(onnx, lambda c: _f(c["seconds"], ".1f")),
             _triple(onnx, lambda c: _mb(c["bytes"])),
             (f"{fp16['max_relative_error']:.4f}, {fp16.get('top1_agreement', float('nan')):.3f}"
              if "max_relative_error" in fp16 else "-"),
             _agreement_cell(int8_figures) + (f", {int8_figures['samples']}" if "samples" in int8_figures else ""),
             _fallback_cell(int8),
             _modelopt_cell(r["modelopt"], "max"), _modelopt_cell(r["modelopt"], "entropy"),
             _versus(int8_figures, r["modelopt"], gate)]
    for f in other:
      by_precision = r["formats"].get(f, {})
      cells.append(_triple(by_precision, lambda c: c["status"] if c["status"] in ("skipped", "pending") else
                           f"{c['status']} {_f(c['seconds'], '.1f')} s {_mb(c['bytes'])}"))
    timings, facts = r["timings"], r["facts"]
    worker = timings.get("total_seconds")
    save = facts.get("save_seconds")
    variants = sum(c.get("seconds") or 0 for cells_ in r["formats"].values() for c in cells_.values())
    cells += [f"{_f(timings.get('freeze_seconds'), '.0f')} / {variants:.0f} / {_f(timings.get('verify_seconds'), '.0f')}"
              f" = {_f(worker, '.0f')} ({_f(facts.get('worker_wall_seconds'), '.0f')})",
              f"{_f(save, '.2f')} ({_f(facts.get('trace_seconds'), '.2f')})",
              f"{worker / save:.0f}x" if worker and save else "-"]
    lines.append("| " + " | ".join(cells) + " |")
    for artifact, (status, reason) in r["reasons"].items():
      notes.setdefault((artifact.rsplit("_", 1)[0] if status == "skipped" else artifact, status, reason),
                       []).append(r["model"])
    for method, entry in (r["modelopt"] or {}).items():
      if "error" in entry:
        notes.setdefault((f"ModelOpt {method}", "failed", entry["error"]), []).append(r["model"])
  return "\n".join(lines), [f"- {what} {status} ({', '.join(dict.fromkeys(models))}): {reason}"
                            for (what, status, reason), models in notes.items()]


def _versus(ours, modelopt, gate):
  """'>=' / '<' ours against ModelOpt's best method, and whether ours holds the gate where ModelOpt does not."""
  best = [e for e in (modelopt or {}).values() if "agreement" in e]
  if "top1_agreement" not in ours or not best:
    return "-"
  top = max(best, key=lambda e: e["agreement"])
  sign = ">=" if ours["top1_agreement"] >= top["agreement"] else "<"
  text = f"{sign} ({ours['top1_agreement'] - top['agreement']:+.3f})"
  side = {True: "over", False: "under"}
  return (text + f"; gate: ModelOpt {side[top['bound'] >= gate]}, ours "
          f"{side[ours['top1_agreement_lower_bound'] >= gate]}")


def _versions():
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found = []
  for package in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxconverter-common", "tensorrt_rtx",
                  "tensorrt"):
    try:
      found.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
      pass
  if FLAGS.modelopt_python:
    import subprocess  # pylint: disable=g-import-not-at-top
    result = subprocess.run([FLAGS.modelopt_python, "-c", "from importlib import metadata as m; print(', '.join("
                             "p + ' ' + m.version(p) for p in ('nvidia-modelopt', 'torch', 'onnx', "
                             "'onnxruntime-gpu')))"], capture_output=True, text=True, check=False)
    found.append("ModelOpt env: " + (result.stdout.strip() or result.stderr.strip()[-200:]))
  return ", ".join(found)


def main(argv):
  del argv
  quiet_console.quiet_absl()  # as the examples: the console shows TrtExport's lines, the worker logs the rest
  quiet_console.import_tensorflow()
  from tests import zoo_models  # pylint: disable=g-import-not-at-top
  unknown = [m for m in FLAGS.models if m not in zoo_models.ARCHITECTURES]
  if unknown:
    raise app.UsageError(f"--models: unknown {unknown}; known: {sorted(zoo_models.ARCHITECTURES)}")
  started = time.perf_counter()
  print(f"bench_zoo: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs", flush=True)
  rows = []
  for name in FLAGS.models:
    root = os.path.join(FLAGS.work_dir, name)
    model_start = time.perf_counter()
    print(f"bench_zoo: {name} ...", flush=True)
    facts = _reused(root) if FLAGS.reuse_export else _export(name, root)
    with open(facts["manifest"], encoding="utf-8") as f:
      manifest = json.load(f)
    architecture, _ = zoo_models.ARCHITECTURES[name]
    modelopt = None
    if FLAGS.modelopt_python and architecture.data == "image":
      modelopt = _modelopt_rows(os.path.dirname(facts["manifest"]), manifest, root)
    rows.append(_row(name, facts, modelopt))
    print(f"bench_zoo: {name} done in {time.perf_counter() - model_start:.0f} s (version {manifest['version']}, "
          f"load {os.getloadavg()[0]:.1f})", flush=True)
  text, notes = table(rows)
  calibration = {r["model"]: (r["calibration"].get("samples"), r["calibration"].get("verification_samples"))
                 for r in rows}
  print(f"\n{_versions()}\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}; total "
        f"{time.perf_counter() - started:.0f} s\nsamples (calibration, verification) per model: {calibration}\n")
  print(text)
  if notes:
    print("\n" + "\n".join(notes))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
  quiet_console.quiet_tensorflow()  # before TensorFlow loads
  app.run(main)
