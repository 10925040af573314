"""The end-of-run texts: `summary_table` (reasons never cut mid-word) and `describe_export` (tier unit)."""

import json

import pytest

from tests import console_table
from tftrt_keras.verify import summary

pytestmark = pytest.mark.unit

LONG_REASON = ("TensorRT 8.6.1 not found (TensorFlow looks for libnvinfer.so.8.6.1; no libnvinfer is installed), so "
               "TF-TRT reports \"Tensorflow has not been built with TensorRT support\"; no GPU visible to TensorFlow; "
               "TensorRT engines need an NVIDIA GPU")
OTHER_LONG_REASON = ("verification failed: output `logits`: top-1 agreement 0.91 on 500 samples, 95% lower bound "
                     "0.889 < 0.97 (INT8 threshold)")


def _manifest(version, split=None, warnings=None):
  calibration = {"status": "ok", "path": f"../../calibration/{version}"}
  if split:
    calibration["split"] = split
  if warnings:
    calibration["warnings"] = warnings
  return {"version": version, "artifacts": {
      "native": {"status": "ok", "path": f"../../{version}"},
      "calibration": calibration,
      "tftrt_fp16": {"status": "skipped", "path": None, "reason": LONG_REASON},
      "tftrt_int8": {"status": "skipped", "path": None, "reason": LONG_REASON},
      "onnx_fp16": {"status": "failed", "path": None, "reason": "built from onnx_fp32, which is failed"},
      "onnx_int8": {"status": "rejected", "path": f"../../onnx_int8/{version}", "reason": OTHER_LONG_REASON},
  }}


def _rows(text):
  """{row label: row cells} of the latest export's table."""
  header, *rows = console_table.table_lines(text)
  cuts = [header.index("status"), header.index("path", header.index("status"))]
  if "reason" in header[cuts[1]:]:
    cuts.append(header.index("reason", cuts[1]))
  return {row[:cuts[0]].strip(): [row[a:b].strip() for a, b in zip([0] + cuts, cuts + [None])] for row in rows}


def _footnotes(text):
  """{"[n]": the reason, its wrapped lines joined again} below the table."""
  notes = {}
  for line in text.splitlines():
    if line.startswith("["):
      number, _, rest = line.partition("] ")
      notes[number + "]"] = [rest]
    elif notes and line.startswith("    "):  # continuation lines are indented under the text
      notes[list(notes)[-1]].append(line.strip())
    elif notes:
      break
  return {k: " ".join(v) for k, v in notes.items()}


def test_a_format_is_one_row_and_each_reason_is_a_footnote_written_once():
  text = summary.summary_table([_manifest(1), _manifest(2)], root="/exports", width=80)
  rows = _rows(text)
  assert text.splitlines()[1].split() == ["version", "2", "(latest)", "status", "(fp16", "/", "int8)", "path"]
  assert rows["tftrt"] == ["tftrt", "skipped [1]", "-"]  # both precisions agree: one word
  assert rows["onnx"] == ["onnx", "failed [2] / rejected [3]", "onnx_int8/2"]
  assert rows["calibration"] == ["calibration", "ok", "calibration/2"]
  assert "…" not in text and "onnx_fp16" not in text.split("[1]")[0]
  # Each reason exactly once, every word of it intact (joined again, the wrapped text is the reason).
  assert _footnotes(text) == {"[1]": LONG_REASON, "[2]": "built from onnx_fp32, which is failed",
                              "[3]": OTHER_LONG_REASON}
  assert max(len(line) for line in text.splitlines()) <= 80


def test_a_short_reason_a_whole_row_shares_stands_in_the_table():
  manifest = {"version": 7, "artifacts": {
      "native": {"status": "ok", "path": "../../7"},
      "onnx_fp32": {"status": "skipped", "path": None, "reason": "not requested here"},
      "onnx_int8": {"status": "skipped", "path": None, "reason": "not requested here"}}}
  text = summary.summary_table([manifest], root="/exports")
  assert _rows(text)["onnx"] == ["onnx", "skipped", "-", "not requested here"]
  assert "[1]" not in text


def test_earlier_exports_are_one_statement_and_superseded_is_said_once():
  superseded = "superseded: export version {} was due before this export's conversion started"
  earlier = [_manifest(1)]
  for version in (2, 3):
    manifest = _manifest(version)
    for name in ("tftrt_fp16", "tftrt_int8", "onnx_fp16", "onnx_int8"):
      manifest["artifacts"][name] = {"status": "skipped", "path": None, "reason": superseded.format(version + 1)}
    earlier.append(manifest)
  text = summary.summary_table(earlier + [_manifest(4)], root="/exports", width=400, heading="exports:")
  lines = text.splitlines()
  # Versions with the same counts are one group; what "superseded" means is said once, after them.
  assert lines[0] == ("exports: version 1: 2 ok, 1 rejected, 1 failed, 2 skipped; versions 2-3: 2 ok, 4 skipped "
                      "(4 superseded); " + summary.SUPERSEDED_NOTE)
  assert lines[1].startswith("version 4 (latest)  status")
  assert set(_rows(text)) == {"native", "calibration", "tftrt", "onnx"}  # the latest in full
  assert text.count("superseded:") == 1 and "version 3 was due" not in text
  assert text.count(LONG_REASON[:40]) == 1  # the earlier exports' reasons are not repeated
  # Versions apart, or with other counts, are not grouped.
  assert summary.earlier_text([_manifest(1), _manifest(3)]).startswith("version 1: 2 ok, 1 rejected, 1 failed, 2 "
                                                                       "skipped; version 3: ")
  assert summary.earlier_text([_manifest(1), earlier[1], _manifest(3)]) == (
      "version 1: 2 ok, 1 rejected, 1 failed, 2 skipped; version 2: 2 ok, 4 skipped (4 superseded); "
      "version 3: 2 ok, 1 rejected, 1 failed, 2 skipped; " + summary.SUPERSEDED_NOTE)


def test_reasons_said_before_training_are_not_written_again():
  text = summary.summary_table([_manifest(1)], root="/exports", said=[LONG_REASON])
  rows = _rows(text)
  assert rows["tftrt"] == ["tftrt", "skipped", "-", "said above"]
  assert LONG_REASON[:40] not in text and OTHER_LONG_REASON in " ".join(text.split())


def test_known_skips_are_one_statement_naming_each_format_and_its_reason():
  text = summary.known_skips_text({"trt_fp32": "no TensorRT", "trt_int8": "no TensorRT", "tftrt_fp32": "no TF-TRT"},
                                      width=400)
  assert text.splitlines() == ["tftrt_keras: skipped on this machine: trt (no TensorRT), tftrt (no TF-TRT)"]
  assert summary.known_skips_text({}) == ""


def test_known_skips_say_the_first_clause_and_where_the_full_reason_is():
  text = summary.known_skips_text({"tftrt_fp32": "TensorRT 8.6.1 not found (TensorFlow looks for libnvinfer.so.8.6.1); "
                                                 "no GPU visible to TensorFlow",
                                   "trt_fp16": "TensorRT engines cannot be built here: TensorRT's Python package does "
                                               "not import (ModuleNotFoundError: No module named 'tensorrt')"},
                                  width=400)
  assert text.splitlines() == [
      "tftrt_keras: skipped on this machine: tftrt (TensorRT 8.6.1 not found), trt (TensorRT's Python package does "
      "not import); why and what to install: python -m tftrt_keras.preflight"]


def test_variants_are_named_by_format_with_their_precisions():
  assert summary.variant_groups(["onnx_fp32", "onnx_int8", "trt_rtx_fp16", "native"]) == (
      "onnx fp32/int8, trt_rtx fp16, native")


def test_formats_skipped_for_a_reason_said_above_share_one_row():
  manifest = _manifest(3)
  manifest["artifacts"].update({name: {"status": "skipped", "path": None, "reason": LONG_REASON.upper()}
                                for name in ("trt_fp16", "trt_int8")})
  text = summary.summary_table([manifest], root="/exports", said=[LONG_REASON, LONG_REASON.upper()])
  assert _rows(text)["tftrt, trt"] == ["tftrt, trt", "skipped", "-", "said above"]


def test_a_word_longer_than_the_width_stands_whole_on_its_line():
  path = "/very/long/path/" + "x" * 120 + "/model.onnx"
  manifest = {"version": 1, "artifacts": {"onnx_fp32": {"status": "failed", "reason": f"cannot read {path}"}}}
  text = summary.summary_table([manifest], width=60)
  assert text.splitlines()[-2:] == ["[1] cannot read", "    " + path]


def test_table_without_reasons_has_no_notes():
  manifest = {"version": 3, "artifacts": {"native": {"status": "ok", "path": "../../3"}}}
  text = summary.summary_table([manifest], root="/r")
  assert text.splitlines() == ["version 3  status  path", "native     ok      3"]  # one export: no "(latest)"


def _write(tmp_path, manifest):
  directory = tmp_path / "manifests" / str(manifest["version"])
  directory.mkdir(parents=True)
  path = directory / "manifest.json"
  path.write_text(json.dumps(manifest))
  return path


def test_describe_export_says_how_samples_were_split_and_warns(tmp_path):
  split = "of 64 captured samples, 48 calibrate and 16 verify (held out at random over the whole pass)"
  warning = "INT8 calibrates on 48 samples; at least 300 are recommended"
  manifest = dict(_manifest(2, split=split, warnings=[warning]),
                  verification={"samples": 16, "servable": ["native", "onnx_fp32"], "rejected": ["onnx_int8"]})
  path = _write(tmp_path, manifest)
  text = summary.describe_export(str(path), width=400)
  lines = text.splitlines()
  assert lines[0].split()[:2] == ["version", "2"] and _rows(text)["onnx"][1] == "failed [2] / rejected [3]"
  assert _footnotes(text)["[1]"] == LONG_REASON  # each reason once
  # How the samples were used, one statement; statuses are the table's, not repeated.
  assert f"Calibration: {split}. Verification judged on 16 held-out samples." in lines
  assert f"Warning: {warning}." in lines
  assert lines[-1] == f"Manifest: {path}"


def test_describe_export_without_the_listing_keeps_only_the_notes(tmp_path):
  manifest = _manifest(4, split="of 10 captured samples, 8 calibrate and 2 verify")
  manifest["verification"] = {"skipped": "verification turned off (ConversionOptions.verify=False)"}
  path = _write(tmp_path, manifest)
  text = summary.describe_export(str(path), list_artifacts=False)
  assert text.splitlines() == [
      "Calibration: of 10 captured samples, 8 calibrate and 2 verify. Not verified: verification turned off",
      "    (ConversionOptions.verify=False).", f"Manifest: {path}"]


SPREAD = "spread across samples 2e-07 of its largest value 0.1 (< 0.001)"
NOT_VARYING = ("the model's outputs do not vary enough over the held-out samples to judge (output `probabilities`: "
               f"{SPREAD})")


def _unverified_manifest(version):
  manifest = _manifest(version)
  manifest["artifacts"].update({
      "frozen": {"status": "unverified", "path": f"../../frozen/{version}", "reason": NOT_VARYING},
      "onnx_fp32": {"status": "unverified", "path": f"../../onnx_fp32/{version}", "reason": NOT_VARYING},
      "onnx_fp16": {"status": "ok", "path": f"../../onnx_fp16/{version}"}})
  manifest["verification"] = {"samples": 24, "servable": ["native", "frozen", "onnx_fp32", "onnx_fp16"],
                              "rejected": ["onnx_int8"], "unverified": ["frozen", "onnx_fp32"],
                              "outputs_not_varying": {"probabilities": SPREAD}}
  return manifest


def test_unverified_is_a_status_of_its_own_with_its_reason_written_once():
  text = summary.summary_table([_unverified_manifest(5)], root="/exports", width=100)
  rows = _rows(text)
  assert rows["frozen"] == ["frozen", "unverified [2]", "frozen/5"]
  assert rows["onnx"] == ["onnx", "unverified [2] / ok / rejected [3]", "onnx_*/5"]  # precisions in the header's order
  assert text.count("do not vary enough") == 1  # one reference for both, the reason once below the table
  assert _footnotes(text)["[2]"] == NOT_VARYING


def test_export_notes_say_what_unverified_means_and_which_outputs_do_not_vary():
  lines = summary.export_notes(_unverified_manifest(5), width=400)
  assert lines == [
      "Verification judged on 24 held-out samples (unverified: usable, but nothing vouches for them).",
      f"Warning: the normal export's output `probabilities` does not vary over these samples ({SPREAD}): no "
      "variant can be judged on it."]


def test_export_notes_say_when_top1_agreement_cannot_judge_one_class():
  manifest = _unverified_manifest(5)
  manifest["verification"]["outputs_one_class"] = {"logits": "top-1 class 0 for 24 of 24 samples"}
  assert ("Warning: the normal export's output `logits` gives one class nearly everywhere (top-1 class 0 for 24 of "
          "24 samples): top-1 agreement cannot judge FP16/INT8 variants on it; verdicts by tolerance stand."
          in summary.export_notes(manifest, width=400))
