"""`tftrt-export` with labelled samples: `label:<output>` arrays in --calibration_data and --metrics give the
model's own metrics on every variant, as the training callbacks do."""

import json
import os

import numpy as np
import pytest

from tests import saved_models
from tests.test_tftrt_export_cli import _run

pytestmark = pytest.mark.tf


def test_labelled_calibration_data_and_metrics_flag_give_accuracy_per_variant(tmp_path):
  reference = saved_models.classifier(tmp_path / "model", seed=4)
  x = saved_models.samples(80, seed=6)["x"]
  classes = reference(x)["probabilities"].shape[1]
  labels = reference(x)["probabilities"].argmax(axis=1)
  labels[::3] = (labels[::3] + 1) % classes  # a third of the labels disagree with the model
  np.savez(tmp_path / "labelled.npz", x=x, **{"label:probabilities": labels})
  out = tmp_path / "serving"
  result = _run(f"--saved_model_dir={tmp_path / 'model'}", f"--output_dir={out}", "--export_formats=onnx",
                "--export_precisions=FP32", f"--calibration_data={tmp_path / 'labelled.npz'}", "--metrics=accuracy",
                "--export_verification_samples=20")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / "manifests" / "1" / "manifest.json") as f:
    manifest = json.load(f)
  metrics = manifest["task_metrics"]
  figures = metrics["variants"]["onnx_fp32"]["accuracy"]
  assert metrics["samples"] == 20 and figures["value"] == pytest.approx(figures["normal"])
  # The normal export's accuracy is the model's on the held-out rows and their own labels.
  directory = os.path.join(out, "calibration", "1")
  held = np.load(os.path.join(directory, "verification.npz"))["x"]
  held_labels = np.load(os.path.join(directory, "verification_labels.npz"))["label:probabilities"]
  assert figures["normal"] == pytest.approx(np.mean(reference(held)["probabilities"].argmax(axis=1) == held_labels))
  shown = result.stdout.splitlines()  # the CLI's own metrics: a head, then per metric the normal export's value
  head = next(i for i, line in enumerate(shown) if line.startswith("Model's own metrics, 20 labelled samples"))
  words = shown[head + 1].split()
  assert words[:2] == ["accuracy", f"{figures['normal']:.4g}"] and f"{figures['difference']:+.2g}" in words, words


def test_labels_of_an_output_the_signature_lacks_exit_2_naming_calibration_data(tmp_path):
  saved_models.classifier(tmp_path / "model")
  np.savez(tmp_path / "bad.npz", x=saved_models.samples(8)["x"], **{"label:nope": np.zeros(8)})
  result = _run(f"--saved_model_dir={tmp_path / 'model'}", f"--output_dir={tmp_path / 'o'}",
                f"--calibration_data={tmp_path / 'bad.npz'}", "--metrics=accuracy")
  assert result.returncode == 2 and "calibration_data" in result.stderr and "label:nope" in result.stderr
  assert not os.path.exists(tmp_path / "o" / "1")
