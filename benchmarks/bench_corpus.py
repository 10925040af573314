#!/usr/bin/env python
"""Users' own training scripts through TrtExport (issue 22): every corpus script of this TF line, one table.

  nice -n 15 .venv/tf2.21/bin/python benchmarks/bench_corpus.py [--only=mnist_convnet,functional_api_multi_io]
      [--out=table.md] [--work_dir=/tmp/bench_corpus]

(from the repository root, with any TF line's Python). Each script of tests/corpus/ that applies to this line (its
`# corpus-lines:` comment) runs as a child process, `python tests/corpus/<name>.py <work_dir>/<line>/<name>`, one
at a time: a keras-io example with synthetic data and `TrtExport(precisions=("FP32", "FP16", "INT8"))` in its
`fit`. The table reads each export's manifests: per artifact of the newest export its status (ok; U unverified,
S skipped, F failed, R rejected, with the number of its reason below the table; a format's three precisions in
one cell, fp32/fp16/int8), the script's exit status and seconds (training, exports and `fit`'s wait for the
conversions), and a verdict by tests/test_corpus.py's rules over every export: `pass` when the normal export is
`ok` and every other artifact is `ok` or unusable for a reason of this machine or of the data, no variant built
on a rejected or failed source is usable; else `FAIL`. Reasons are listed once each, numbers in them folded.
"""

import collections
import os
import re
import shutil
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import corpus_scripts  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("only", [], "Corpus script names to run (default: every script of this TF line).")
flags.DEFINE_string("out", "", "Also write the table (markdown) to this file.")
flags.DEFINE_string("work_dir", "/tmp/bench_corpus", "Exports go to <work_dir>/<line>/<script> (emptied first).")
flags.DEFINE_integer("timeout", 600, "Seconds one script may run.")

LETTER = {"ok": "ok", "unverified": "U", "skipped": "S", "failed": "F", "rejected": "R", "pending": "P"}
SINGLE = ("native", "frozen", "calibration")
PRECISIONS = ("fp32", "fp16", "int8")
REASON_WIDTH = 400


def _folded(reason):
  """The reason with run-specific numbers (function names, sample counts in paths) folded, to count it once."""
  text = re.sub(r"__inference_\w+?_\d+", "__inference_…", " ".join((reason or "").split()))
  return text if len(text) <= REASON_WIDTH else text[:REASON_WIDTH - 1] + "…"


class Reasons:
  """Numbers each distinct reason in order of appearance."""

  def __init__(self):
    self.numbers = collections.OrderedDict()

  def cell(self, entry):
    letter = LETTER.get(entry["status"], entry["status"])
    if entry["status"] == "ok":
      return letter
    number = self.numbers.setdefault(_folded(entry.get("reason")), len(self.numbers) + 1)
    return f"{letter}{number}"


def _status_cells(manifest, reasons):
  artifacts = manifest["artifacts"]
  cells = [f"{name} {reasons.cell(artifacts[name])}" for name in SINGLE if name in artifacts]
  formats = sorted({n.rsplit("_", 1)[0] for n in artifacts if n not in SINGLE},
                   key=lambda f: ("onnx", "trt", "trt_rtx", "tftrt").index(f) if f in ("onnx", "trt", "trt_rtx",
                                                                                         "tftrt") else 9)
  for fmt in formats:
    parts = [reasons.cell(artifacts[f"{fmt}_{p}"]) if f"{fmt}_{p}" in artifacts else "-" for p in PRECISIONS]
    cells.append(f"{fmt} {parts[0] if len(set(parts)) == 1 else '/'.join(parts)}")
  return ", ".join(cells)


def _verdict(run, manifests):
  if run.returncode != 0 or not manifests:
    return "FAIL"
  for manifest in manifests.values():
    if manifest["artifacts"]["native"]["status"] != "ok":
      return "FAIL"
    if corpus_scripts.not_ours_problems(manifest) or corpus_scripts.usable_on_unusable_source(manifest):
      return "FAIL"
  return "pass"


def _row(run, line, reasons):
  manifests = run.manifests()
  if manifests:
    newest = manifests[max(manifests)]
    statuses = f"v{newest['version']} of {len(manifests)}: {_status_cells(newest, reasons)}"
  else:
    last = [l for l in run.output.strip().splitlines() if l.strip()][-1:] or ["no output"]
    statuses = f"no export ({reasons.cell({'status': 'failed', 'reason': last[0]})})"
  return (run.name, line, f"{run.seconds:.0f}", str(run.returncode), _verdict(run, manifests), statuses)


def _table(rows, reasons):
  header = ("script", "line", "s", "exit", "verdict", "statuses of the newest export (U/S/F/R + reason number)")
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  lines += ["", "Reasons:"] + [f"{n}. {text}" for text, n in reasons.numbers.items()]
  return "\n".join(lines)


def main(argv):
  del argv
  line = corpus_scripts.tf_line()
  names = FLAGS.only or corpus_scripts.scripts(line)
  unknown = sorted(set(names) - set(corpus_scripts.scripts()))
  if unknown:
    raise app.UsageError(f"--only names no corpus script: {unknown} (available: {corpus_scripts.scripts()})")
  reasons, rows = Reasons(), []
  for name in names:
    if line not in corpus_scripts.lines_of(name):
      print(f"{name}: does not apply to TF {line} (lines {corpus_scripts.lines_of(name)}), not run", flush=True)
      continue
    export_dir = os.path.join(FLAGS.work_dir, line, name)
    shutil.rmtree(export_dir, ignore_errors=True)
    print(f"running {name} ...", flush=True)
    run = corpus_scripts.run_script(name, export_dir, timeout=FLAGS.timeout)
    rows.append(_row(run, line, reasons))
    print(f"  exit {run.returncode} in {run.seconds:.0f} s", flush=True)
  table = _table(rows, reasons)
  print(table)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  app.run(main)
