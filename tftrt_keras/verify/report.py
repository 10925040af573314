"""What verification found, for people: a table (printed by `tftrt-export`, and in `report.md`), a latency chart
(`latency.png`) and TensorBoard scalars. Everything here reads a manifest only; nothing loads a model.
"""

import os

from tftrt_keras.artifacts.manifest import OK, REJECTED, UNVERIFIED, serving_results
from tftrt_keras.verify.summary import split_lines
from tftrt_keras.task_metrics import render as task_metrics_render

REPORT_FILE = "report.md"
LATENCY_PLOT_FILE = "latency.png"
MATPLOTLIB_INSTALL_COMMAND = "pip install 'tftrt_keras[report]'"
_RUNNABLE_ORDER = ("native", "frozen")
_TOP1_KEYS = ("top1_agreement", "element_top1_agreement")


def _worst(entry):
  """(max abs error, max relative error, min top-1 agreement, per sample or per element) over an artifact's
  outputs; None when absent."""
  outputs = (entry.get("verification") or {}).get("outputs") or {}
  abs_errors = [o["max_abs_error"] for o in outputs.values() if "max_abs_error" in o]
  rel_errors = [o["max_relative_error"] for o in outputs.values() if "max_relative_error" in o]
  top1 = [o[key] for o in outputs.values() for key in _TOP1_KEYS if key in o]
  return (max(abs_errors) if abs_errors else None, max(rel_errors) if rel_errors else None,
          min(top1) if top1 else None)


def _latency_at(entry, batch_size):
  for row in (entry.get("verification") or {}).get("latency") or []:
    if row["batch_size"] == batch_size:
      return row
  return None


def _number(value, digits=4):
  if value is None:
    return "-"
  if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
    return str(value)
  return f"{value:.{digits}g}"


def verified_artifacts(manifest):
  """Names of the artifacts verification ran (or tried to run), the normal export first."""
  names = [n for n, e in manifest["artifacts"].items() if "verification" in e]
  return sorted(names, key=lambda n: (_RUNNABLE_ORDER.index(n) if n in _RUNNABLE_ORDER else len(_RUNNABLE_ORDER)))


def verification_rows(manifest):
  """The verification table as rows of strings (header first), or [] when the manifest has no verification."""
  summary = manifest.get("verification") or {}
  names = verified_artifacts(manifest)
  if not names:
    return []
  batch_sizes = summary.get("batch_sizes") or [1]
  header = ["artifact", "status", "max abs err", "max rel err", "top-1"]
  for size in batch_sizes:
    header += [f"b{size} p50 ms", f"b{size} p99 ms", f"b{size} first ms"]
  header.append(f"b{batch_sizes[-1]} samples/s")
  rows = [header]
  for name in names:
    entry = manifest["artifacts"][name]
    verification = entry["verification"]
    if name == "native":
      errors = ["reference", "reference", "reference"]
    elif "error" in verification:
      errors = ["error", "error", "error"]
    elif "runner_unavailable" in verification:
      errors = ["not run", "not run", "not run"]
    else:
      errors = [_number(v) for v in _worst(entry)]
    row = [name + (" (TF front + ONNX)" if entry.get("after_front") else ""), entry["status"]] + errors
    for size in batch_sizes:
      latency = _latency_at(entry, size) or {}
      row += [_number(latency.get("p50_ms")), _number(latency.get("p99_ms")), _number(latency.get("first_call_ms"))]
    row.append(_number((_latency_at(entry, batch_sizes[-1]) or {}).get("samples_per_second"), 6))
    rows.append(row)
  return rows


def verification_table(manifest, notes=True):
  """Fixed-width text table of verification results, as `tftrt-export` prints it ("" when there are none).

  Args:
    manifest: a closed manifest (dict).
    notes: add a line per rejected or unverified artifact with its reason (False where printed elsewhere).
  """
  rows = verification_rows(manifest)
  if not rows:
    summary = manifest.get("verification") or {}
    reason = summary.get("skipped") or summary.get("error")
    return f"verification: {reason}" if reason else ""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = []
  for i, row in enumerate(rows):
    lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if i == 0:
      lines.append("  ".join("-" * width for width in widths))
  below = _notes(manifest) if notes else []
  return "\n".join(lines + ([""] + below if below else []))


def _notes(manifest):
  """One line per rejected or unverified artifact that verification ran (or tried to run): its status and why."""
  grouped = {}  # artifacts with the same status and reason share one line: each reason is written once
  for name in verified_artifacts(manifest):
    entry = manifest["artifacts"][name]
    if entry["status"] in (REJECTED, UNVERIFIED):
      why = entry.get("reason") or entry["verification"].get("error")
      grouped.setdefault((entry["status"], why), []).append(name)
  notes = [f"{', '.join(names)}: {status}: {why}" for (status, why), names in grouped.items()]
  error = (manifest.get("verification") or {}).get("error")
  if error:
    notes.append(f"verification stopped: {error}")
  return notes


def serving_lines(manifest):
  """One line per serving target (e.g. "Serving (triton): failed: <reason>."), then a blank line; [] when none."""
  lines = []
  for target, record in serving_results(manifest).items():
    models = ", ".join(record.get("models") or ()) or "none"
    why = f"published {models}" if record["status"] == OK else record.get("reason")
    lines.append(f"Serving ({target}): {record['status']}: {why} (repository {record.get('repository')}).")
  return lines + [""] if lines else []


def _markdown_table(rows):
  lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
  lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
  return lines


def _calibration_lines(manifest):
  """How the captured samples were split, and the warnings about them, as markdown lines ([] when absent)."""
  calibration = manifest.get("artifacts", {}).get("calibration") or {}
  lines = []
  if calibration.get("split"):
    lines += [f"Samples: {calibration['split']}.", ""]
  warnings = calibration.get("warnings") or []
  if warnings:
    lines += [f"- Warning: {warning}." for warning in warnings] + [""]
  return lines


def _cut_text(manifest, summary):
  """What the latency budget cut, e.g. " (fewer where the timed calls passed 1.0 s: onnx_int8 b32 5)"; or ""."""
  expected = summary.get("timed_runs")
  cut = [f"{name} b{row['batch_size']} {row['timed_runs']}" for name, entry in manifest["artifacts"].items()
         for row in (entry.get("verification") or {}).get("latency") or ()
         if expected and row.get("timed_runs", expected) < expected]
  if not cut:
    return ""
  return f" (fewer where the timed calls passed {summary.get('latency_budget_seconds')} s: {', '.join(cut)})"


def render_markdown(manifest, latency_plot=LATENCY_PLOT_FILE, plot_missing_reason=None):
  """`report.md`'s text: sample split, verification table, per-output figures and thresholds, what was not verified.

  Args:
    manifest: a closed manifest (dict).
    latency_plot: file name of the latency chart to link, or None.
    plot_missing_reason: why there is no chart although latency was measured, or None.
  """
  summary = manifest.get("verification") or {}
  lines = [f"# Export {manifest['version']}: verification", ""] + serving_lines(manifest) + _calibration_lines(manifest)
  if summary.get("skipped"):
    return "\n".join(lines + [f"Not verified: {summary['skipped']}.", ""])
  lines.append(f"Compared with the normal export (signature `{manifest.get('signature_key', 'serving_default')}`) "
               f"on {summary.get('samples', 0)} held-out samples that INT8 calibration never saw. Latency: "
               f"first call timed alone, then {summary.get('warmup_runs')} warm-up calls, then median (p50) and "
               f"p99 over {summary.get('timed_runs')} calls per batch size{_cut_text(manifest, summary)}.")
  lines.append("")
  rows = verification_rows(manifest)
  if rows:
    lines += _markdown_table(rows) + [""]
  steady = summary.get("outputs_not_varying") or {}
  if steady:
    lines += [f"The normal export's outputs do not vary enough over these {summary.get('samples', 0)} samples to "
              "judge any artifact by them (an artifact returning about the same constant would pass): "
              + "; ".join(f"`{output}`: {words}" for output, words in sorted(steady.items())) + ".", ""]
  single = summary.get("outputs_one_class") or {}
  if single:
    lines += ["The normal export gives one class nearly everywhere on "
              + "; ".join(f"`{output}` ({words})" for output, words in sorted(single.items()))
              + ": top-1 agreement cannot judge FP16/INT8 variants on it (they stay unverified); verdicts by "
              "tolerance stand, its values vary.", ""]
  split = split_lines(manifest, width=10 ** 6)
  if split:
    lines += split + [""]
  lines += task_metrics_render.markdown_lines(manifest)
  notes = _notes(manifest)
  if notes:
    lines += ["## Rejected or unverified", ""] + [f"- {note}" for note in notes] + [""]
  not_run = [(n, e) for n, e in manifest["artifacts"].items() if "verification" not in e and n != "calibration"]
  if not_run:
    lines += ["## Not produced", ""]
    grouped = {}
    for name, entry in not_run:
      grouped.setdefault((entry["status"], entry.get("reason")), []).append(name)
    lines += [f"- {', '.join(names)}: {status}" + (f" ({why})" if why else "") for (status, why), names in grouped.items()]
    lines.append("")
  details = [n for n in verified_artifacts(manifest) if (manifest["artifacts"][n]["verification"].get("outputs"))]
  if details:
    lines += ["## Per output", ""]
    lines += _markdown_table([["artifact", "output", "samples", "max abs err", "max rel err", "top-1", "agreement",
                               "95% bounds", "threshold"]] + [
        [name, output, str(manifest["artifacts"][name]["verification"].get("samples", "-")),
         _number(f.get("max_abs_error")), _number(f.get("max_relative_error")),
         _number(_top1(f)), _number(f.get("agreement")), _bounds_text(f),
         _threshold_text(manifest["artifacts"][name]["verification"], f)]
        for name in details
        for output, f in sorted(manifest["artifacts"][name]["verification"]["outputs"].items())])
    lines.append("")
  if latency_plot:
    lines += [f"![latency]({latency_plot})", ""]
  elif plot_missing_reason:
    lines += [plot_missing_reason, ""]
  return "\n".join(lines)


def _top1(figures):
  return next((figures[key] for key in _TOP1_KEYS if key in figures), None)


def _bounds_text(figures):
  """The one-sided 95% Wilson bounds of an agreement figure, "[lower, upper]"; "-" for error figures."""
  for key in _TOP1_KEYS + ("agreement",):
    if key + "_lower_bound" in figures:
      return f"[{_number(figures[key + '_lower_bound'])}, {_number(figures.get(key + '_upper_bound'))}]"
  return "-"


def _threshold_text(verification, figures):
  thresholds = verification["thresholds"]
  on = " (95% bounds)" if thresholds.get("agreement_judged_by", "bounds") != "observed" else ""
  if "agreement" in figures:
    return f"agreement >= {thresholds['min_agreement']:g}{on}"
  judged_by = thresholds["classifier_judged_by"]
  top1 = "top-1"
  if "element_top1_agreement" in figures:  # per element, on an effective count (agreement.clustered_bounds)
    top1 = "per-element top-1"
    on = on and f" (95% bounds, {_number(figures.get('effective_elements'))} effective elements)"
  if _top1(figures) is not None and judged_by == "top1_agreement":
    return f"{top1} >= {thresholds['min_agreement']:g}{on}"
  if _top1(figures) is not None and judged_by == "top1_agreement_and_max_relative_error":
    return (f"{top1} >= {thresholds['min_agreement']:g}{on}, "
            f"rel err <= {thresholds['classifier_max_relative_error']:g}")
  if "relative_error_quantile" in figures and thresholds.get("dense_judged_by") == "relative_error_quantile":
    level = f"p{100 * thresholds['dense_error_quantile']:g}"
    return f"{level} rel err {_number(figures['relative_error_quantile'])} <= {thresholds['max_relative_error']:g}"
  return f"rel err <= {thresholds['max_relative_error']:g}"


def plot_latency(manifest, path):
  """Writes a PNG: per batch size, p50 / p99 / first-call latency of each verified artifact (log scale).

  Uses matplotlib's Agg canvas directly (no pyplot), so it neither needs a display nor changes the backend of a
  process that already uses pyplot.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  summary = manifest.get("verification") or {}
  batch_sizes = summary.get("batch_sizes") or [1]
  names = [n for n in verified_artifacts(manifest) if manifest["artifacts"][n]["verification"].get("latency")]
  figure = Figure(figsize=(4 + 1.2 * max(1, len(names)) * len(batch_sizes), 4.5), dpi=100)
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(batch_sizes), squeeze=False)[0]
  series = (("p50_ms", "p50", "#4c72b0"), ("p99_ms", "p99", "#dd8452"), ("first_call_ms", "first call", "#8c8c8c"))
  for ax, size in zip(axes, batch_sizes):
    x = np.arange(len(names))
    for i, (key, label, color) in enumerate(series):
      values = [(_latency_at(manifest["artifacts"][n], size) or {}).get(key) or 0.0 for n in names]
      ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=label, color=color)
    ax.set_xticks(x)
    ax.set_xticklabels([n + (f"\n({manifest['artifacts'][n]['status']})"
                             if manifest["artifacts"][n]["status"] in (REJECTED, UNVERIFIED) else "")
                        for n in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(f"batch size {size}")
    ax.grid(axis="y", which="both", alpha=0.3)
  axes[0].legend(fontsize=8)
  figure.suptitle(f"Export {manifest['version']}: latency per artifact")
  figure.tight_layout()
  figure.savefig(path, format="png")
  return path


def matplotlib_missing_reason():
  """None when matplotlib imports; else the one line `report.md` says instead of the chart."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return (f"No latency chart ({LATENCY_PLOT_FILE}): matplotlib is not installed; "
            f"`{MATPLOTLIB_INSTALL_COMMAND}` adds it.")
  return None


def write_report(manifest, directory, redraw=True):
  """Writes `report.md`, then `latency.png` (needs the optional matplotlib), into the manifest's `directory`.

  `redraw=False` rewrites the markdown only, linking the chart already drawn.

  Returns:
    {"report": path, "latency_plot": path (absent when nothing was timed or matplotlib is missing)}.
  """
  has_latency = any((e.get("verification") or {}).get("latency") for e in manifest["artifacts"].values())
  missing = matplotlib_missing_reason() if has_latency else None
  drawn = os.path.exists(os.path.join(directory, LATENCY_PLOT_FILE))
  draw = has_latency and missing is None and (redraw or drawn)
  path = os.path.join(directory, REPORT_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(render_markdown(manifest, LATENCY_PLOT_FILE if draw else None, plot_missing_reason=missing))
  os.replace(path + ".tmp", path)
  written = {"report": path}
  if draw and redraw:
    written["latency_plot"] = plot_latency(manifest, os.path.join(directory, LATENCY_PLOT_FILE))
  return written


def write_tensorboard_scalars(manifest, log_dir, step):
  """Writes each verified artifact's figures as TensorBoard scalars under `verification/<artifact>/`.

  Scalars: `max_abs_error`, `top1_agreement` (worst output of each) and `latency_p50_ms_batch<N>`. Plain
  `tf.summary`, no TensorRT, so the training process may call it.

  Args:
    manifest: a closed manifest (dict).
    log_dir: TensorBoard log directory (a writer is opened and closed here).
    step: the training step of the export.

  Returns:
    {tag: value} of what was written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for name in verified_artifacts(manifest):
    entry = manifest["artifacts"][name]
    max_abs, _, top1 = _worst(entry)
    if max_abs is not None:
      scalars[f"verification/{name}/max_abs_error"] = max_abs
    if top1 is not None:
      scalars[f"verification/{name}/top1_agreement"] = top1
    for row in entry["verification"].get("latency") or []:
      scalars[f"verification/{name}/latency_p50_ms_batch{row['batch_size']}"] = row["p50_ms"]
  scalars.update(task_metrics_render.tensorboard_scalars(manifest))
  writer = tf.summary.create_file_writer(str(log_dir))
  try:
    with writer.as_default():
      for tag, value in scalars.items():
        tf.summary.scalar(tag, float(value), step=int(step))
    writer.flush()
  finally:
    writer.close()
  return scalars
