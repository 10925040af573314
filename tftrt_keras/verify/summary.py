"""What a user reads at the end of a run, `tftrt-export` and the report: each earlier export in one line, the
latest as a table with one row per format (its precisions in one cell), and notes about one export.

Reasons are never cut: a short one shared by a whole row stands in the table, any other is numbered (`[1]`) and
written once below it, wrapped at word boundaries. Reads manifests only.
"""

import os
import re
import textwrap

from tftrt_keras.artifacts.manifest import FAILED, OK, PENDING, REJECTED, SKIPPED, UNVERIFIED, serving_results
from tftrt_keras.task_metrics import render as task_metrics_render

# A reason up to this long, shared by a whole row, stands in the table; any other is a numbered footnote.
INLINE_REASON_WIDTH = 48
# Lines below the table (reasons, notes) wrap at this width.
TEXT_WIDTH = 100
# A variant's name is its format's and its precision's: `trt_rtx_int8`.
_VARIANT = re.compile(r"^(?P<format>.+)_(?P<precision>fp32|fp16|bf16|fp8|int8)$")
_PRECISION_ORDER = ("fp32", "fp16", "bf16", "fp8", "int8")
SAID_ABOVE = "said above"


def wrap(text, width=TEXT_WIDTH, first_prefix="", indent="    "):
  """`text` as lines of at most `width` characters, broken between words only (a longer word stands alone)."""
  return textwrap.wrap(" ".join(str(text).split()), width=width, initial_indent=first_prefix,
                       subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [first_prefix]


def summary_table(manifests, root=None, inline_reason_width=INLINE_REASON_WIDTH, width=TEXT_WIDTH, said=(),
                  heading=None):
  """Renders a run's exports: the earlier ones in one statement, the latest (the last given) as a table.

  Args:
    manifests: manifest dicts, oldest first.
    root: the export root; paths are shown relative to it (else as the manifest records them).
    inline_reason_width: a reason up to this long that a whole row shares stands in the table; any other is a
      footnote `[n]`, written once below the table.
    width: width the lines outside the table wrap at.
    said: reasons already printed (the preflight's skips): shown as "said above", not repeated.
    heading: words the text starts with ("tftrt_keras exports:"), on the earlier exports' line.

  Returns:
    The text (no trailing newline).
  """
  if not manifests:
    return ""
  *earlier, latest = manifests
  first = " ".join(part for part in (heading, earlier_text(earlier)) if part)
  lines = wrap(first, width) if first else []
  table, texts = artifact_table(latest, root, inline_reason_width, said,
                                title=f"version {latest['version']}{' (latest)' if earlier else ''}")
  lines += table
  for number, reason in enumerate(texts, 1):
    lines += wrap(reason, width, first_prefix=f"[{number}] ", indent=" " * (len(str(number)) + 3))
  return "\n".join(lines)


# The order counts are given in on an earlier export's line.
STATUS_ORDER = (OK, UNVERIFIED, REJECTED, FAILED, SKIPPED, PENDING)
SUPERSEDED_NOTE = "superseded: a newer export was due first (conversion_policy='every' converts all)."


def earlier_text(manifests):
  """One statement for the exports before the latest: consecutive versions with the same counts by status
  together ("versions 2-4: 3 ok, 13 skipped (12 superseded)", each), what "superseded" means said once."""
  groups = []  # [first version, last version, counts text]
  for manifest in manifests:
    counts = counts_text(manifest)
    if groups and groups[-1][2] == counts and int(manifest["version"]) == int(groups[-1][1]) + 1:
      groups[-1][1] = manifest["version"]
    else:
      groups.append([manifest["version"], manifest["version"], counts])
  if not groups:
    return ""
  parts = [f"version {a}: {c}" if a == b else f"versions {a}-{b}: {c}" for a, b, c in groups]
  if any(_superseded(e) for m in manifests for _, e in _rows_of(m)):
    parts.append(SUPERSEDED_NOTE)
  return "; ".join(parts)


def counts_text(manifest):
  """An export's artifacts counted by status, "superseded" said once: "3 ok, 13 skipped (12 superseded)"."""
  counts, superseded = {}, 0
  for _, entry in _rows_of(manifest):
    counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    superseded += _superseded(entry)
  order = list(STATUS_ORDER) + sorted(set(counts) - set(STATUS_ORDER))
  parts = [f"{counts[s]} {s}" + (f" ({superseded} superseded)" if s == SKIPPED and superseded else "")
           for s in order if counts.get(s)]
  return ", ".join(parts) or "no artifacts"


def variant_groups(names):
  """Variant names grouped by format, precisions joined: "onnx fp32/fp16/int8, trt_rtx int8, native"."""
  return ", ".join(fmt if members[0][0] is None else f"{fmt} {'/'.join(p for p, _ in members)}"
                   for fmt, members in _by_format(names))


def _by_format(names):
  """[(format or name, [(precision or None, name)])]: a format's variants together, in first-seen order."""
  groups = {}
  for name in names:
    match = _VARIANT.match(name)
    key = (match.group("format"), True) if match else (name, False)
    groups.setdefault(key, []).append((match.group("precision") if match else None, name))
  return [(key[0], members) for key, members in groups.items()]


def artifact_table(manifest, root=None, inline_reason_width=INLINE_REASON_WIDTH, said=(), title="artifact"):
  """(lines of the fixed-width table of one export's artifacts, the reasons its `[n]` refer to).

  One row per format, its precisions in one cell ("ok / ok / rejected [1]", or one word when they agree); formats
  skipped for a reason said above share one row. Header: `title`, status (and precisions), path, reason.
  """
  said = {" ".join(str(r).split()) for r in said}
  entries = dict(_rows_of(manifest))
  precisions = sorted({p for _, members in _by_format(entries) for p, _ in members if p},
                      key=lambda p: _PRECISION_ORDER.index(p))
  texts, rows, merged = [], [], {}
  for fmt, members in _by_format(entries):
    reasons = {" ".join(str(entries[n].get("reason") or "").split()) for _, n in members}
    shared = reasons.pop() if len(reasons) == 1 else None
    inline = shared if shared in said or (shared and len(shared) <= inline_reason_width) else ""
    if shared in said:
      inline = SAID_ABOVE
    names = dict(members)
    cells = {p: _cell(entries[names[p]], texts, inline, said) for p in [None] + precisions if p in names}
    path = _group_path([(n, _path(manifest, entries[n], root)) for _, n in members], fmt)
    row = [fmt, cells.popitem()[1] if len(set(cells.values())) == 1 else " / ".join(
        cells.get(p, "-") for p in precisions), path, inline]
    key = tuple(row[1:])
    if path == "-" and inline and key in merged:  # e.g. "tftrt, trt  skipped  -  said above"
      merged[key][0] += f", {fmt}"
      continue
    merged[key] = row
    rows.append(row)
  status = "status" + (f" ({' / '.join(precisions)})" if len(precisions) > 1 else "")
  rows.insert(0, [title, status, "path", "reason" if any(r[3] for r in rows) else ""])
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  return [("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3]).rstrip() for row in rows], texts


def _cell(entry, texts, inline, said):
  """An artifact's status, with the number of its footnote when its reason is not in the row's reason column."""
  reason = " ".join(str(entry.get("reason") or "").split())
  if not reason or reason == inline or reason in said:
    return entry["status"]
  if reason not in texts:
    texts.append(reason)
  return f"{entry['status']} [{texts.index(reason) + 1}]"


def _path(manifest, entry, root):
  path = entry.get("path")
  if root and path and not os.path.isabs(path):
    return os.path.relpath(os.path.normpath(os.path.join(root, "manifests", str(manifest["version"]), path)), root)
  return path or None


def _group_path(named_paths, fmt):
  """One path, `onnx_*/3` for a format whose variants' paths differ by their precision only, or a list."""
  paths = [(n, p) for n, p in named_paths if p]
  if len(paths) <= 1:
    return paths[0][1] if paths else "-"
  globbed = {p.replace(n, f"{fmt}_*") for n, p in paths}
  return globbed.pop() if len(globbed) == 1 else ", ".join(p for _, p in paths)


def known_skips_text(skips, width=TEXT_WIDTH):
  """What is said once before the first export about variants this machine cannot build: one statement, each
  reason's first clause after the variants it stops.

  Args:
    skips: {variant: reason}, as `preflight.variants_skipped_here` returns it.
    width: the width lines wrap at.
  """
  by_reason = {}
  for variant, reason in skips.items():
    by_reason.setdefault(" ".join(str(reason).split()), []).append(variant)
  if not by_reason:
    return ""
  # Whole formats (the preflight skips a format for this machine, whatever the precision): "tftrt (TensorRT ...)".
  parts = [f"{', '.join(fmt for fmt, _ in _by_format(variants))} ({_first_clause(reason)})"
           for reason, variants in by_reason.items()]
  shortened = any(_first_clause(reason) != reason for reason in by_reason)
  # The console says what; the preflight and each manifest say it in full, with the fix.
  where = "; why and what to install: python -m tftrt_keras.preflight" if shortened else ""
  return "\n".join(wrap(f"tftrt_keras: skipped on this machine: {', '.join(parts)}{where}", width))


def _first_clause(reason):
  """The reason up to its first parenthesis, semicolon or sentence end, after any "...: " lead-in: "TensorRT 8.6.1
  not found", "TensorRT's Python package does not import"."""
  for mark in (" (", "; ", ". "):
    reason = reason.split(mark, 1)[0]
  return reason.rsplit(": ", 1)[-1]


def _rows_of(manifest):
  return list(manifest.get("artifacts", {}).items()) + _serving_rows(manifest)


def _superseded(entry):
  return entry.get("status") == SKIPPED and str(entry.get("reason") or "").startswith("superseded")


def _serving_rows(manifest):
  """(`serving:<target>`, {status, path: the repository, reason}) per serving target the export was published to."""
  return [(f"serving:{target}", {"status": r["status"], "path": r.get("repository"), "reason": r.get("reason")})
          for target, r in serving_results(manifest).items()]


def export_notes(manifest, width=TEXT_WIDTH):
  """Lines about one export beyond its table: how the captured samples were split, warnings about them, what
  verification judged on, the model's own metrics, the split ([] when there is nothing to say). Statuses and
  reasons are the table's: not repeated here."""
  lines = []
  calibration = manifest.get("artifacts", {}).get("calibration") or {}
  verification = manifest.get("verification") or {}
  samples = [f"Calibration: {calibration['split']}."] if calibration.get("split") else []
  judged = not verification.get("skipped") and verification.get("samples") is not None
  if verification.get("skipped"):
    samples.append(f"Not verified: {verification['skipped']}.")
  elif judged:
    unverified = any(e.get("status") == UNVERIFIED for e in manifest.get("artifacts", {}).values())
    samples.append(f"Verification judged on {verification['samples']} held-out samples"
                   + (" (unverified: usable, but nothing vouches for them)" if unverified else "") + ".")
  if samples:  # one statement: how the captured samples were used
    lines += wrap(" ".join(samples), width)
  for warning in calibration.get("warnings") or []:
    lines += wrap(f"Warning: {warning}.", width)
  if judged:  # warnings about the outputs verification judged, after the samples' own
    for output, words in sorted((verification.get("outputs_not_varying") or {}).items()):
      lines += wrap(f"Warning: the normal export's output `{output}` does not vary over these samples ({words}): "
                    "no variant can be judged on it.", width)
    for output, words in sorted((verification.get("outputs_one_class") or {}).items()):
      lines += wrap(f"Warning: the normal export's output `{output}` gives one class nearly everywhere ({words}): "
                    "top-1 agreement cannot judge FP16/INT8 variants on it; verdicts by tolerance stand.", width)
  own_metrics = task_metrics_render.summary_lines(manifest)
  if own_metrics:  # a table: its rows are not wrapped
    lines += wrap(own_metrics[0], width) + own_metrics[1:]
  lines += split_lines(manifest, width)
  return lines


def describe_export(manifest_path, list_artifacts=True, width=TEXT_WIDTH):
  """What an end-of-training script prints about one export.

  Args:
    manifest_path: the export's `manifest.json`.
    list_artifacts: start with the export's table (`summary_table`'s; False when it was printed already).
    width: the width long lines wrap at (between words).

  Returns:
    The text: the table (when asked), the notes of `export_notes`, and the manifest's path.
  """
  from tftrt_keras.artifacts.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  manifest = read_manifest(manifest_path)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(manifest_path))))
  lines = [summary_table([manifest], root=root, width=width)] if list_artifacts else []
  lines += export_notes(manifest, width)
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
