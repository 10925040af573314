"""The verification report: the printed table, report.md, latency.png and TensorBoard scalars."""

import struct

import numpy as np
import pytest

from tftrt_keras.verify import report


def _latency(p50, first):
  return [{"batch_size": 1, "first_call_ms": first, "p50_ms": p50, "p99_ms": p50 * 1.5, "timed_runs": 5,
           "samples_per_second": 1000.0 / p50},
          {"batch_size": 8, "first_call_ms": first * 2, "p50_ms": p50 * 2, "p99_ms": p50 * 3, "timed_runs": 5,
           "samples_per_second": 8000.0 / (p50 * 2)}]


def _manifest():
  thresholds_fp16 = {"max_relative_error": 0.01, "min_agreement": 0.98, "classifier_judged_by": "max_relative_error",
                     "agreement_judged_by": "observed"}
  thresholds_int8 = dict(thresholds_fp16, max_relative_error=0.1, classifier_judged_by="top1_agreement",
                         agreement_judged_by="bounds")
  return {
      "version": 7, "signature_key": "serving_default",
      "verification": {"samples": 16, "batch_sizes": [1, 8], "warmup_runs": 1, "timed_runs": 5,
                       "servable": ["native", "tftrt_fp16"], "rejected": ["tftrt_int8"], "unverified": []},
      "artifacts": {
          "native": {"status": "ok", "path": "../../7", "verification": {"samples": 16, "latency": _latency(2.0, 40.0)}},
          "frozen": {"status": "skipped", "path": None, "reason": "holds a lookup table"},
          "calibration": {"status": "ok", "path": "../../calibration/7"},
          "tftrt_fp16": {"status": "ok", "path": "../../tftrt_fp16/7", "verification": {
              "samples": 16, "precision": "FP16", "thresholds": thresholds_fp16, "passed": True, "reason": None,
              "outputs": {"logits": {"max_abs_error": 0.0125, "max_relative_error": 0.0025, "top1_agreement": 1.0},
                          "ids": {"agreement": 1.0}},
              "latency": _latency(0.5, 900.0)}},
          "tftrt_int8": {"status": "rejected", "path": "../../tftrt_int8/7",
                         "reason": "verification failed: output `logits`: top-1 agreement 0.75 < 0.98 (INT8 threshold)",
                         "verification": {
                             "samples": 16, "precision": "INT8", "thresholds": thresholds_int8, "passed": False,
                             "reason": "verification failed: output `logits`: top-1 agreement 0.75 < 0.98 "
                                       "(INT8 threshold)",
                             "outputs": {"logits": {"max_abs_error": 1.5, "max_relative_error": 0.3,
                                                    "top1_agreement": 0.75}},
                             "latency": _latency(0.25, 1200.0)}},
      },
  }


TOO_FEW = ("output `probabilities`: too few verification samples to tell: top-1 agreement 1 on 16 samples, 95% bounds "
           "[0.8554, 1] around the gate 0.97 (raise verification_samples or give more validation data)")
NO_GPU = "no GPU of compute capability 8.6 here: the engine was built, nothing here can run it"


def _manifest_with_unverified():
  """`_manifest()` plus an FP16 ONNX variant judged on too few samples and an engine nothing here can run."""
  manifest = _manifest()
  thresholds = {"max_relative_error": 0.01, "min_agreement": 0.97, "agreement_judged_by": "bounds",
                "classifier_judged_by": "top1_agreement_and_max_relative_error", "classifier_max_relative_error": 0.05}
  manifest["artifacts"]["onnx_fp16"] = {
      "status": "unverified", "path": "../../onnx_fp16/7", "reason": TOO_FEW, "verification": {
          "samples": 16, "precision": "FP16", "thresholds": thresholds, "verdict": "unverified", "passed": False,
          "reason": TOO_FEW, "latency": _latency(1.0, 50.0),
          "outputs": {"probabilities": {"max_abs_error": 0.002, "max_relative_error": 0.004, "top1_agreement": 1.0,
                                        "samples": 16, "top1_agreement_lower_bound": 0.855355,
                                        "top1_agreement_upper_bound": 1.0}}}}
  manifest["artifacts"]["trt_fp16"] = {"status": "unverified", "path": "../../trt_fp16/7", "reason": NO_GPU,
                                       "verification": {"runner_unavailable": NO_GPU}}
  manifest["verification"].update(servable=["native", "tftrt_fp16", "onnx_fp16", "trt_fp16"],
                                  unverified=["onnx_fp16", "trt_fp16"])
  return manifest


@pytest.mark.unit
def test_a_reason_shared_by_several_artifacts_is_written_once_in_the_report(tmp_path):
  manifest = _manifest_with_unverified()
  manifest["artifacts"]["trt_int8"] = dict(manifest["artifacts"]["trt_fp16"], path="../../trt_int8/7")
  manifest["artifacts"]["trt_fp32"] = {"status": "skipped", "path": None, "reason": "not requested"}
  manifest["artifacts"]["trt_bf16"] = {"status": "skipped", "path": None, "reason": "not requested"}
  report.write_report(manifest, str(tmp_path))
  text = (tmp_path / "report.md").read_text()
  assert f"- trt_fp16, trt_int8: unverified: {NO_GPU}" in text.splitlines() and text.count(NO_GPU) == 1
  assert "- trt_fp32, trt_bf16: skipped (not requested)" in text.splitlines()


@pytest.mark.unit
def test_unverified_artifacts_are_shown_as_such_with_their_reasons_and_figures(tmp_path):
  text = report.verification_table(_manifest_with_unverified())
  rows = _table_rows(text)
  assert rows["onnx_fp16"][1:5] == ["unverified", "0.002", "0.004", "1"]
  assert rows["trt_fp16"][1:5] == ["unverified", "not", "run", "not"]  # nothing ran: no figures, no latency
  assert f"onnx_fp16: unverified: {TOO_FEW}" in text.splitlines()
  assert f"trt_fp16: unverified: {NO_GPU}" in text.splitlines()
  report.write_report(_manifest_with_unverified(), str(tmp_path))
  lines = (tmp_path / "report.md").read_text().splitlines()
  notes = lines[lines.index("## Rejected or unverified") + 2:]
  assert notes[:3] == ["- tftrt_int8: rejected: verification failed: output `logits`: top-1 agreement 0.75 < 0.98 "
                       "(INT8 threshold)", f"- onnx_fp16: unverified: {TOO_FEW}", f"- trt_fp16: unverified: {NO_GPU}"]
  assert ("| onnx_fp16 | probabilities | 16 | 0.002 | 0.004 | 1 | - | [0.8554, 1] | top-1 >= 0.97 (95% bounds), "
          "rel err <= 0.05 |") in lines


@pytest.mark.unit
def test_report_says_once_when_the_normal_exports_outputs_do_not_vary(tmp_path):
  manifest = _manifest()
  manifest["verification"]["outputs_not_varying"] = {"logits": "0 for all 16 samples"}
  markdown = report.render_markdown(manifest, latency_plot=None)
  assert markdown.count("do not vary") == 1
  assert ("The normal export's outputs do not vary enough over these 16 samples to judge any artifact by them (an "
          "artifact returning about the same constant would pass): `logits`: 0 for all 16 samples."
          in markdown.splitlines())


@pytest.mark.unit
def test_report_says_when_one_class_keeps_top1_agreement_from_judging():
  manifest = _manifest()
  manifest["verification"]["outputs_one_class"] = {"logits": "top-1 class 0 for 24 of 24 samples"}
  assert ("The normal export gives one class nearly everywhere on `logits` (top-1 class 0 for 24 of 24 samples): "
          "top-1 agreement cannot judge FP16/INT8 variants on it (they stay unverified); verdicts by tolerance "
          "stand, its values vary." in report.render_markdown(manifest, latency_plot=None).splitlines())


def _table_rows(text):
  lines = text.splitlines()
  return {line.split()[0]: line.split() for line in lines[2:] if line.strip() and ":" not in line.split()[0]}


@pytest.mark.unit
def test_table_has_one_row_per_verified_artifact_with_worst_figures():
  text = report.verification_table(_manifest())
  assert text.splitlines()[0].split() == [
      "artifact", "status", "max", "abs", "err", "max", "rel", "err", "top-1", "b1", "p50", "ms", "b1", "p99", "ms",
      "b1", "first", "ms", "b8", "p50", "ms", "b8", "p99", "ms", "b8", "first", "ms", "b8", "samples/s"]
  rows = _table_rows(text)
  assert list(rows) == ["native", "tftrt_fp16", "tftrt_int8"]  # the skipped frozen graph has nothing to show
  assert rows["native"][:5] == ["native", "ok", "reference", "reference", "reference"]
  assert rows["tftrt_fp16"][:9] == ["tftrt_fp16", "ok", "0.0125", "0.0025", "1", "0.5", "0.75", "900", "1"]
  assert rows["tftrt_int8"][1:5] == ["rejected", "1.5", "0.3", "0.75"]
  assert rows["tftrt_int8"][-1] == "16000"  # 8 samples in 0.5 ms
  assert "tftrt_int8: rejected: verification failed: output `logits`: top-1 agreement 0.75 < 0.98" in text


@pytest.mark.unit
def test_table_without_verification_is_empty_or_says_why():
  manifest = _manifest()
  for entry in manifest["artifacts"].values():
    entry.pop("verification", None)
  manifest.pop("verification")
  assert report.verification_table(manifest) == ""
  manifest["verification"] = {"skipped": "verification turned off (ConversionOptions.verify=False)"}
  assert report.verification_table(manifest) == "verification: verification turned off (ConversionOptions.verify=False)"


def _png_size(data):
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  assert data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


@pytest.mark.unit
def test_write_report_writes_markdown_and_a_readable_latency_chart(tmp_path):
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  written = report.write_report(_manifest(), str(tmp_path))
  markdown = (tmp_path / "report.md").read_text()
  assert written == {"report": str(tmp_path / "report.md"), "latency_plot": str(tmp_path / "latency.png")}
  assert markdown.startswith("# Export 7: verification")
  assert "| tftrt_int8 | rejected | 1.5 | 0.3 | 0.75 |" in markdown
  assert "- frozen: skipped (holds a lookup table)" in markdown
  assert "| tftrt_int8 | logits | 16 | 1.5 | 0.3 | 0.75 | - | - | top-1 >= 0.98 (95% bounds) |" in markdown
  assert "| tftrt_fp16 | ids | 16 | - | - | - | 1 | - | agreement >= 0.98 |" in markdown
  assert "![latency](latency.png)" in markdown
  width, height = _png_size((tmp_path / "latency.png").read_bytes())
  assert 400 <= width <= 3000 and 300 <= height <= 2000
  pixels = matplotlib.image.imread(str(tmp_path / "latency.png"))
  assert pixels.shape[:2] == (height, width) and float(np.std(pixels)) > 0.05  # drawn, not a blank canvas


@pytest.mark.unit
def test_report_of_a_skipped_verification_says_so_and_has_no_chart(tmp_path):
  manifest = {"version": 3, "artifacts": {"native": {"status": "ok"}},
              "verification": {"skipped": "verification turned off (ConversionOptions.verify=False)"}}
  written = report.write_report(manifest, str(tmp_path))
  assert list(written) == ["report"]
  assert "Not verified: verification turned off" in (tmp_path / "report.md").read_text()
  assert not (tmp_path / "latency.png").exists()


@pytest.mark.tf
def test_tensorboard_scalars_match_the_manifest(tmp_path):
  # tf.summary needs the tensorboard package, which TensorFlow 2.21 no longer installs.
  pytest.importorskip("tensorboard", reason="tf.summary needs the tensorboard package (pip install tensorboard)")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  written = report.write_tensorboard_scalars(_manifest(), str(tmp_path), step=42)
  found = {}
  for path in tmp_path.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        found[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
  assert found["verification/tftrt_int8/top1_agreement"] == (42, pytest.approx(0.75))
  assert found["verification/tftrt_int8/max_abs_error"] == (42, pytest.approx(1.5))
  assert found["verification/tftrt_fp16/latency_p50_ms_batch1"] == (42, pytest.approx(0.5))
  assert found["verification/native/latency_p50_ms_batch8"] == (42, pytest.approx(4.0))
  assert "verification/native/max_abs_error" not in found  # the reference has no error to report
  assert set(found) == set(written)


@pytest.mark.unit
def test_report_says_how_the_samples_were_split_and_warns(tmp_path):
  manifest = _manifest()
  manifest["artifacts"]["calibration"].update(
      split="of 64 captured samples, 48 calibrate and 16 verify (held out at random over the whole pass)",
      warnings=["INT8 calibrates on 48 samples; at least 300 are recommended"])
  report.write_report(manifest, str(tmp_path))
  lines = (tmp_path / "report.md").read_text().splitlines()
  assert ("Samples: of 64 captured samples, 48 calibrate and 16 verify (held out at random over the whole pass)."
          in lines)
  assert "- Warning: INT8 calibrates on 48 samples; at least 300 are recommended." in lines
  assert lines.index("- Warning: INT8 calibrates on 48 samples; at least 300 are recommended.") < lines.index(
      "| native | ok | reference | reference | reference | 2 | 3 | 40 | 4 | 6 | 80 | 2000 |")


# The child's own import system, not the product: a meta path finder that refuses matplotlib, as on a machine
# where the optional `report` extra was not installed.
_WITHOUT_MATPLOTLIB = """
import json, sys
class NoMatplotlib:
  def find_spec(self, name, path=None, target=None):
    if name == "matplotlib" or name.startswith("matplotlib."):
      raise ImportError(f"No module named {name!r} (hidden by the test)")
    return None
sys.meta_path.insert(0, NoMatplotlib())
from tftrt_keras.verify import report
written = report.write_report(json.loads(sys.argv[1]), sys.argv[2])
print(json.dumps(written))
"""


@pytest.mark.unit
def test_without_matplotlib_the_report_is_written_and_says_how_to_get_the_chart(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  result = subprocess.run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, json.dumps(_manifest()), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stderr
  assert json.loads(result.stdout) == {"report": str(tmp_path / "report.md")}
  assert not (tmp_path / "latency.png").exists()
  markdown = (tmp_path / "report.md").read_text()
  missing = [line for line in markdown.splitlines() if "matplotlib" in line]
  assert missing == ["No latency chart (latency.png): matplotlib is not installed; "
                     "`pip install 'tftrt_keras[report]'` adds it."]
  assert "![latency]" not in markdown
  assert "| tftrt_int8 | rejected | 1.5 | 0.3 | 0.75 |" in markdown  # the rest of the report is all there
