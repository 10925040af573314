"""What a user reads at the end: the table of every artifact (end of training, `tftrt-export`) and the notes
about one export (how the samples were split, warnings, where the manifest is). Reads manifests only.

Reasons are never cut: a short one stands in the table, a long one is referenced there (`[1]`) and written
once below the table, wrapped at word boundaries with its continuation lines indented.
"""

import os
import re
import textwrap

from tftrt_keras.artifacts.manifest import UNVERIFIED, serving_results
from tftrt_keras.task_metrics import render as task_metrics_render

# A reason up to this long stands in the table; a longer one is referenced and written below it.
INLINE_REASON_WIDTH = 48
# Lines below the table (reasons, notes) wrap at this width.
TEXT_WIDTH = 100


def wrap(text, width=TEXT_WIDTH, first_prefix="", indent="    "):
  """`text` as lines of at most `width` characters, broken between words only (a longer word stands alone)."""
  return textwrap.wrap(" ".join(str(text).split()), width=width, initial_indent=first_prefix,
                       subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [first_prefix]


def summary_table(manifests, root=None, inline_reason_width=INLINE_REASON_WIDTH, width=TEXT_WIDTH):
  """Renders manifests as a fixed-width text table (version, artifact, status, path, reason).

  Args:
    manifests: manifest dicts, in the order to list them.
    root: the export root; paths are shown relative to it (else as the manifest records them).
    inline_reason_width: a reason up to this long is written in the table; a longer one as `[n]`, with the
      full text once below the table (several artifacts with the same reason share one reference, and so do
      one artifact's reasons of several versions that differ only in numbers).
    width: width the reasons below the table wrap at.

  Returns:
    The table as text (no trailing newline).
  """
  rows = [("version", "artifact", "status", "path", "reason")]
  references, texts, also = {}, [], {}
  for manifest in manifests:
    version = manifest["version"]
    for name, entry in list(manifest["artifacts"].items()) + _serving_rows(manifest):
      path = entry.get("path") or "-"
      if root and entry.get("path") and not os.path.isabs(entry["path"]):
        path = os.path.relpath(os.path.normpath(os.path.join(root, "manifests", str(version), entry["path"])), root)
      reason = " ".join(str(entry.get("reason") or "").split())
      if len(reason) > inline_reason_width:
        number = references.get(reason) or references.get((name, _shape(reason)))
        if number is None:
          texts.append(reason)
          number = references[(name, _shape(reason))] = len(texts)
        elif reason not in references:
          also.setdefault(number, []).append(str(version))
        references.setdefault(reason, number)
        reason = f"[{number}]"
      rows.append((str(version), name, entry["status"], path, reason))
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  lines = []
  for i, row in enumerate(rows):
    lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4])
    if i == 0:
      lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
  lines = [line.rstrip() for line in lines]
  if texts:
    lines.append("")
    for number, reason in enumerate(texts, 1):
      if number in also:
        versions = f"version{'s' if len(also[number]) > 1 else ''} {', '.join(also[number])}"
        reason += f" (also {versions}, where only numbers differ; each manifest has its exact text)"
      lines += wrap(reason, width, first_prefix=f"[{number}] ", indent=" " * (len(str(number)) + 3))
  return "\n".join(lines)


def _serving_rows(manifest):
  """(`serving:<target>`, {status, path: the repository, reason}) per serving target the export was published to."""
  return [(f"serving:{target}", {"status": r["status"], "path": r.get("repository"), "reason": r.get("reason")})
          for target, r in serving_results(manifest).items()]


def _shape(reason):
  """A reason with its numbers and addresses blanked: one artifact's failure at every version (an error that
  names its function, object ids or measured values) is one footnote, not one per version."""
  return re.sub(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?", "#", reason)


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
