"""What a user reads at the end of a run, `tftrt-export` and the report: each earlier export in one line, the
latest in full, and notes about one export (sample split, warnings, where the manifest is). Reads manifests only.

Reasons are never cut: a short one stands in the table, a long one is referenced there (`[1]`) and written
once below it, wrapped at word boundaries.
"""

import os
import textwrap

from tftrt_keras.artifacts.manifest import FAILED, OK, PENDING, REJECTED, SKIPPED, UNVERIFIED, serving_results
from tftrt_keras.task_metrics import render as task_metrics_render

# A reason up to this long stands in the table; a longer one is referenced and written below it.
INLINE_REASON_WIDTH = 48
# Lines below the table (reasons, notes) wrap at this width.
TEXT_WIDTH = 100


def wrap(text, width=TEXT_WIDTH, first_prefix="", indent="    "):
  """`text` as lines of at most `width` characters, broken between words only (a longer word stands alone)."""
  return textwrap.wrap(" ".join(str(text).split()), width=width, initial_indent=first_prefix,
                       subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [first_prefix]


def summary_table(manifests, root=None, inline_reason_width=INLINE_REASON_WIDTH, width=TEXT_WIDTH, said=()):
  """Renders a run's exports: each earlier one in one line, the latest (the last given) in full.

  Args:
    manifests: manifest dicts, oldest first.
    root: the export root; paths are shown relative to it (else as the manifest records them).
    inline_reason_width: a reason up to this long stands in the table; a longer one as `[n]`, written once
      below the table (artifacts with the same reason share it).
    width: width the lines below the table wrap at.
    said: reasons already printed (the preflight's skips): shown as "said above", not repeated.

  Returns:
    The text (no trailing newline).
  """
  if not manifests:
    return ""
  *earlier, latest = manifests
  lines = [earlier_line(m) for m in earlier]
  lines.append(f"version {latest['version']}{' (latest)' if earlier else ''}:")
  table, texts = artifact_table(latest, root, inline_reason_width, said)
  lines += table
  notes = [SUPERSEDED_NOTE] if any(_superseded(e) for m in earlier for _, e in _rows_of(m)) else []
  if texts or notes:
    lines.append("")
  for number, reason in enumerate(texts, 1):
    lines += wrap(reason, width, first_prefix=f"[{number}] ", indent=" " * (len(str(number)) + 3))
  for note in notes:
    lines += wrap(note, width)
  return "\n".join(lines)


# The order counts are given in on an earlier export's line.
STATUS_ORDER = (OK, UNVERIFIED, REJECTED, FAILED, SKIPPED, PENDING)
SUPERSEDED_NOTE = ("superseded: a newer export was due before its variants were built (conversion_policy='latest'; "
                   "'every' converts all).")


def earlier_line(manifest):
  """One line for an export that is not the latest: its artifacts counted by status, "superseded" said once."""
  counts, superseded = {}, 0
  for _, entry in _rows_of(manifest):
    counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    superseded += _superseded(entry)
  order = list(STATUS_ORDER) + sorted(set(counts) - set(STATUS_ORDER))
  parts = [f"{counts[s]} {s}" + (f" ({superseded} superseded)" if s == SKIPPED and superseded else "")
           for s in order if counts.get(s)]
  return f"version {manifest['version']}: {', '.join(parts) or 'no artifacts'}"


def artifact_table(manifest, root=None, inline_reason_width=INLINE_REASON_WIDTH, said=()):
  """(lines of the fixed-width table of one export's artifacts, the long reasons its `[n]` refer to)."""
  said = {" ".join(str(r).split()) for r in said}
  rows, texts = [("artifact", "status", "path", "reason")], []
  for name, entry in _rows_of(manifest):
    path = entry.get("path") or "-"
    if root and entry.get("path") and not os.path.isabs(entry["path"]):
      path = os.path.relpath(os.path.normpath(os.path.join(root, "manifests", str(manifest["version"]),
                                                           entry["path"])), root)
    reason = " ".join(str(entry.get("reason") or "").split())
    if reason in said:
      reason = "said above"
    elif len(reason) > inline_reason_width:
      if reason not in texts:
        texts.append(reason)
      reason = f"[{texts.index(reason) + 1}]"
    rows.append((name, entry["status"], path, reason))
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  lines = []
  for i, row in enumerate(rows):
    lines.append(("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]).rstrip())
    if i == 0:
      lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
  return lines, texts


def known_skips_text(skips, width=TEXT_WIDTH):
  """What is said once before the first export about variants this machine cannot build.

  Args:
    skips: {variant: reason}, as `preflight.variants_skipped_here` returns it.
    width: the width lines wrap at.
  """
  by_reason = {}
  for variant, reason in skips.items():
    by_reason.setdefault(" ".join(str(reason).split()), []).append(variant)
  lines = []
  for reason, variants in by_reason.items():
    lines += wrap(f"tftrt_keras: skipped on this machine: {', '.join(variants)}: "
                  f"{reason}", width)
  return "\n".join(lines)


def _rows_of(manifest):
  return list(manifest.get("artifacts", {}).items()) + _serving_rows(manifest)


def _superseded(entry):
  return entry.get("status") == SKIPPED and str(entry.get("reason") or "").startswith("superseded")


def _serving_rows(manifest):
  """(`serving:<target>`, {status, path: the repository, reason}) per serving target the export was published to."""
  return [(f"serving:{target}", {"status": r["status"], "path": r.get("repository"), "reason": r.get("reason")})
          for target, r in serving_results(manifest).items()]


def export_notes(manifest, width=TEXT_WIDTH):
  """Lines about one export beyond its artifacts: how the captured samples were split between calibration and
  verification, warnings about them, what verification judged on, and which artifacts are usable but
  `unverified` ([] when there is nothing to say)."""
  lines = []
  calibration = manifest.get("artifacts", {}).get("calibration") or {}
  if calibration.get("split"):
    lines += wrap(f"Calibration: {calibration['split']}.", width)
  for warning in calibration.get("warnings") or []:
    lines += wrap(f"Warning: {warning}.", width)
  verification = manifest.get("verification") or {}
  if verification.get("skipped"):
    lines += wrap(f"Not verified: {verification['skipped']}.", width)
  elif verification.get("samples") is not None:
    judged = f"Verification judged on {verification['samples']} held-out samples"
    servable, rejected = verification.get("servable") or [], verification.get("rejected") or []
    parts = [f"servable: {', '.join(servable)}" if servable else None,
             f"rejected: {', '.join(rejected)}" if rejected else None]
    lines += wrap(judged + "".join(f"; {p}" for p in parts if p) + ".", width)
    for output, words in sorted((verification.get("outputs_not_varying") or {}).items()):
      lines += wrap(f"Warning: the normal export's output `{output}` does not vary over these samples ({words}): "
                    "no variant can be judged on it.", width)
    for output, words in sorted((verification.get("outputs_one_class") or {}).items()):
      lines += wrap(f"Warning: the normal export's output `{output}` gives one class nearly everywhere ({words}): "
                    "top-1 agreement cannot judge FP16/INT8 variants on it; verdicts by tolerance stand.", width)
  lines += [w for line in task_metrics_render.summary_lines(manifest) for w in wrap(line, width)]
  lines += split_lines(manifest, width)
  unverified = [name for name, entry in manifest.get("artifacts", {}).items() if entry.get("status") == UNVERIFIED]
  if unverified:
    lines += wrap(f"Unverified (usable, but no comparison vouches for them; the reasons are above): "
                  f"{', '.join(unverified)}.", width)
  return lines


def describe_export(manifest_path, list_artifacts=True, width=TEXT_WIDTH):
  """What an end-of-training script prints about one export.

  Args:
    manifest_path: the export's `manifest.json`.
    list_artifacts: list each artifact's status and where it is, then each reason once with the artifacts it
      applies to (False when the table of `summary_table` was printed already).
    width: the width long lines wrap at (between words).

  Returns:
    The text: the artifacts (when asked), the notes of `export_notes`, and the manifest's path.
  """
  from tftrt_keras.artifacts.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  manifest = read_manifest(manifest_path)
  directory = os.path.dirname(os.path.abspath(manifest_path))
  lines = [f"Export version {manifest['version']}:"]
  if list_artifacts:
    reasons = {}
    for name, entry in list(manifest["artifacts"].items()) + _serving_rows(manifest):
      where = os.path.normpath(os.path.join(directory, entry["path"])) if entry.get("path") else "-"
      lines.append(f"  {name:<12} {entry['status']:<10} {where}")
      if entry.get("reason"):
        reasons.setdefault(" ".join(str(entry["reason"]).split()), []).append(name)
    for reason, names in reasons.items():
      lines += wrap(f"{', '.join(names)}: {reason}", width, first_prefix="  ", indent="      ")
  lines += ["  " + line for line in export_notes(manifest, width - 2)]
  lines.append(f"Manifest: {manifest_path}")
  return "\n".join(lines)


def split_lines(manifest, width=TEXT_WIDTH):
  """Where a split model is cut and what runs where ([] for a model that is not split)."""
  split = manifest.get("split") or {}
  if split.get("refused") or split.get("error"):
    return wrap(f"No TF front + ONNX split: {split.get('refused') or split.get('error')}.", width)
  if not split.get("cut"):
    return []
  behind = [n for n, e in manifest.get("artifacts", {}).items() if e.get("after_front")]
  ops = ", ".join(f"{op} x{count}" for op, count in sorted(split.get("runs_in_tf", {}).items()))
  return wrap(f"Split: TF front + ONNX/TensorRT. TensorFlow runs the front ({split.get('front')}: {ops}) from "
              f"{', '.join(split.get('front_inputs', []))}; the cut hands over "
              f"{', '.join(t['name'] for t in split['cut'])}; {', '.join(behind) or 'no variant'} run the rest "
              "behind it, verified end to end.", width)
