"""Engines that survive a change of GPU or TensorRT: the `trt` compatibility options, what `model.json` records, the
refusal before deserializing (`compat.plan_refusal`, in the runner), and Triton's config restricting a plan to the
GPUs it runs on. TensorRT itself (10/11) cannot be installed here: the builder calls run against TensorRT-RTX in
tests/test_trt_rtx_format.py and against TensorRT in the trt tier; the decisions are pure and run everywhere."""

import hashlib
import json

import numpy as np
import pytest

from tftrt_keras.formats.base import BuildJob, RunnerUnavailable
from tftrt_keras.formats.tensorrt import compat, cuda_devices
from tftrt_keras.formats.tensorrt import format as trt_format
from tftrt_keras.formats.tensorrt.binding import EngineBinding, TensorSpec, castable, numpy_dtype, output_array
from tftrt_keras.options import ConversionOptions
from tftrt_keras.serving import triton
from tests import triton_helpers

pytestmark = pytest.mark.unit

A10G = cuda_devices.Gpu(0, "NVIDIA A10G", "8.6", 22731)
A100 = cuda_devices.Gpu(0, "NVIDIA A100-SXM4-80GB", "8.0", 81920)
H100 = cuda_devices.Gpu(1, "NVIDIA H100 80GB HBM3", "9.0", 81559)
T4 = cuda_devices.Gpu(0, "Tesla T4", "7.5", 15360)
RTX_A6000 = cuda_devices.Gpu(0, "NVIDIA RTX A6000", "8.6", 48677)
PLAN = b"plan bytes"


def _metadata(level="none", version="10.8.0.43", vc=False, lean_out=False, capability="8.6", gpu="NVIDIA A10G"):
  metadata = {"tensorrt_version": version, "compute_capability": capability, "gpu_name": gpu,
              "engine_sha256": hashlib.sha256(PLAN).hexdigest(),
              "compatibility": {"hardware_compatibility": level, "version_compatible": vc,
                                "exclude_lean_runtime": lean_out}}
  metadata["compatibility"]["runs_on"] = compat.runs_on(metadata)
  return metadata


@pytest.mark.parametrize("metadata, installed, gpu, refusal", [
    (_metadata(), "10.8.0.43", A10G, None),
    (_metadata(), "10.8.0.43", H100,
     "the plan was built on NVIDIA A10G (compute capability 8.6) without hardware compatibility: it runs only on "
     "GPUs of compute capability 8.6, and GPU 1: NVIDIA H100 80GB HBM3 (compute capability 9.0) is not one (TensorRT "
     "would fail with \"engine plan file is generated on an incompatible device\"); rebuild on this GPU, or build "
     "with format_options['trt'].hardware_compatibility='ampere_plus'"),
    (_metadata("same_compute_capability"), "10.8.0.43", A100, "with hardware_compatibility='same_compute_capability'"),
    (_metadata("same_compute_capability"), "10.8.0.43", RTX_A6000, None),
    (_metadata("ampere_plus"), "10.8.0.43", H100, None),
    (_metadata("ampere_plus"), "10.8.0.43", T4,
     "the plan was built for Ampere and later GPUs (format_options['trt'].hardware_compatibility='ampere_plus': "
     "compute capability 8.0 and later); GPU 0: Tesla T4 (compute capability 7.5) is older"),
    (_metadata(), "10.9.0.34", A10G,
     "the plan was built with TensorRT 10.8.0.43 and this is TensorRT 10.9.0.34: a plan that is not "
     "version-compatible runs only with the TensorRT that built it (TensorRT would fail with \"Version tag does not "
     "match\"); rebuild with this TensorRT, or build with format_options['trt'].version_compatible=True"),
    (_metadata(vc=True), "10.9.0.34", A10G, None),
    (_metadata(vc=True), "11.1.0.7", A10G, None),  # 10 on 11: documented
    (_metadata(vc=True), "10.3.0.26", A10G,
     "the plan is version-compatible from TensorRT 10.8.0.43 on, and this is the older TensorRT 10.3.0.26: version "
     "compatibility runs plans on later TensorRT versions only"),
    (_metadata(vc=True, version="8.6.3.1"), "11.1.0.7", A10G,
     "a version-compatible plan of TensorRT 8 runs on TensorRT 8, 9, 10 (documented), not on TensorRT 11.1.0.7"),
    (_metadata(vc=True, lean_out=True), "10.8.0.43", A10G, None),
    (_metadata(vc=True, lean_out=True), "10.9.0.34", A10G,
     "the plan was built without its lean runtime (format_options['trt'].exclude_lean_runtime=True): on TensorRT "
     "10.9.0.34 it needs the lean runtime library of TensorRT 10.8.0.43 loaded (IRuntime.load_runtime), which this "
     "runner does not do; run it with TensorRT 10.8.0.43, or build with the lean runtime in the plan"),
])
def test_a_plan_for_another_gpu_or_tensorrt_is_refused_with_the_exact_reason(metadata, installed, gpu, refusal):
  reason, _ = compat.plan_refusal(metadata, installed, gpu)
  if refusal is None or reason is None:
    assert reason == refusal
  else:
    assert refusal in reason


def test_what_cannot_be_told_is_said_not_guessed():
  reason, notes = compat.plan_refusal(_metadata(vc=True, version="11.1.0.7"), "12.0.0.1", A10G,
                                      known_levels={"NONE", "AMPERE_PLUS"})
  assert reason is None
  assert notes == ["whether TensorRT 12 runs version-compatible plans of TensorRT 11 is unknown here (documented: "
                   "8 on (9, 10), 10 on (11,))"]
  reason, notes = compat.plan_refusal(_metadata("same_compute_capability"), "8.6.1.6", A10G, known_levels={
      "NONE", "AMPERE_PLUS"})
  assert reason is not None and "8.6.1.6" in reason  # the version differs: that much is known
  assert notes[0] == ("hardware compatibility level SAME_COMPUTE_CAPABILITY is unknown to the installed TensorRT "
                      "8.6.1.6 (it knows ['AMPERE_PLUS', 'NONE']): whether it loads the plan is TensorRT's call")
  old = {"tensorrt_version": "10.8.0.43"}  # a model.json from before the compatibility record, without a GPU
  reason, notes = compat.plan_refusal(old, "10.8.0.43", A10G)
  assert reason is None and notes == ["model.json records no compute capability: which GPUs the plan runs on is "
                                      "unknown"]
  reason, notes = compat.plan_refusal(_metadata(), "10.8.0.43", RTX_A6000)
  assert reason is None and "built on NVIDIA A10G and runs on NVIDIA RTX A6000" in notes[0]


def test_runs_on_and_host_code_only_for_the_plan_model_json_describes():
  assert _metadata()["compatibility"]["runs_on"] == "GPUs of compute capability 8.6 with TensorRT 10.8.0.43 only"
  assert _metadata("ampere_plus", vc=True)["compatibility"]["runs_on"] == (
      "GPUs of compute capability 8.0 and later with TensorRT 10.8.0.43 and later 10.x, 11.x")
  digest = hashlib.sha256(PLAN).hexdigest()
  assert compat.host_code_allowed(_metadata(vc=True), digest)
  assert not compat.host_code_allowed(_metadata(vc=True), hashlib.sha256(b"another plan").hexdigest())
  assert not compat.host_code_allowed(_metadata(vc=True, lean_out=True), digest)
  assert not compat.host_code_allowed(_metadata(), digest)


def test_open_runner_says_why_before_touching_tensorrt(tmp_path):
  """Here (no TensorRT, no GPU) the runner refuses with the preflight's reason as `RunnerUnavailable`, which
  verification records, instead of an ImportError or a CUDA error from deep inside."""
  (tmp_path / "model.plan").write_bytes(PLAN)
  (tmp_path / "model.json").write_text(json.dumps(_metadata()))
  status = trt_format.probe()
  if status.usable:
    pytest.skip("TensorRT and a GPU are here: the refusal is tested by plan_refusal above and the trt tier")
  job = BuildJob(root=str(tmp_path), version=1, native_dir=str(tmp_path), signature_key="serving_default",
                 signature=None, options=ConversionOptions(formats=("trt",)), calibration_batch_sizes=[1])
  with pytest.raises(RunnerUnavailable) as raised:
    trt_format.FORMAT.open_runner(str(tmp_path), job)
  assert str(raised.value) == trt_format.unavailable_text(status, 0)


# --- bfloat16 -----------------------------------------------------------------------------------------------------

def test_bfloat16_tensors_bind_and_come_back():
  """TensorRT's BF16 is "bfloat16" (signatures' and Triton's name); numpy knows it through ml_dtypes."""
  assert numpy_dtype("bfloat16").itemsize == 2
  assert castable("float32", "bfloat16") and castable("bfloat16", "float32") and not castable("int32", "bfloat16")
  spec = TensorSpec("y", "bfloat16", (None, 4))
  assert output_array(spec, (3, 4)).dtype == numpy_dtype("bfloat16")
  binding = EngineBinding([TensorSpec("x", "bfloat16", (None, 4))], [spec], {"x": {"min": [1, 4], "max": [8, 4]}},
                          {"inputs": [{"name": "x", "dtype": "bfloat16", "shape": [None, 4]}],
                           "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 4]}]})
  fed = binding.engine_inputs({"x": np.ones((2, 4), "float32")})["x"]
  assert fed.dtype == numpy_dtype("bfloat16")
  back = binding.signature_outputs({"y": fed})["y"]
  assert back.dtype == np.float32 and back.tolist() == [[1.0] * 4] * 2


# --- Triton -------------------------------------------------------------------------------------------------------

ENGINE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 3]}],
          "profiles": {"x": {"min": [1, 4], "opt": [8, 4], "max": [16, 4]}}, "compute_capability": "8.6"}


@pytest.fixture(scope="module")
def triton_venv():
  reason = triton_helpers.triton_venv_skip_reason()
  if reason:
    pytest.skip(reason)


def _parsed(tmp_path, metadata):
  config = triton.model_config("trt_fp16", metadata, model_name="m_trt_fp16")
  path = tmp_path / "config.pbtxt"
  path.write_text(triton.config_text(config, comment="test"))
  return config, triton_helpers.parse_configs([path])[str(path)], path.read_text()


def test_triton_loads_a_plan_only_on_gpus_it_runs_on(tmp_path, triton_venv):  # pylint: disable=unused-argument
  """cc_model_filenames {"8.6": "model.plan"} alone restricted nothing: model.plan is also Triton's default file,
  which it opens on every other GPU. The default now names a file the version directory does not have."""
  _, parsed, _ = _parsed(tmp_path, dict(ENGINE, compatibility=_metadata()["compatibility"]))
  assert parsed["cc_model_filenames"] == {"8.6": "model.plan"}
  default = parsed["default_model_filename"]
  assert default not in ("model.plan", "") and "8.6" in default
  # publish: the version directory holds model.plan and model.json, never the default's file
  variant_dir = tmp_path / "variant"
  variant_dir.mkdir()
  (variant_dir / "model.plan").write_bytes(PLAN)
  (variant_dir / "model.json").write_text(json.dumps(ENGINE))
  config = triton.model_config("trt_fp16", dict(ENGINE, compatibility=_metadata()["compatibility"]),
                               model_name="m_trt_fp16")
  version_dir = triton.publish_model(str(tmp_path / "repo"), config, str(variant_dir), 1,
                                     export_root=str(tmp_path), variant="trt_fp16")
  assert sorted(p.name for p in (tmp_path / "repo" / "m_trt_fp16" / "1").iterdir()) == ["model.json", "model.plan"]
  assert not (tmp_path / "repo" / "m_trt_fp16" / "1" / default).exists() and version_dir.endswith("1")


def test_an_ampere_plus_plan_loads_on_any_ampere_gpu_and_version_compatibility_is_noted(tmp_path, triton_venv):  # pylint: disable=unused-argument
  metadata = dict(ENGINE, compatibility=_metadata("ampere_plus", vc=True)["compatibility"])
  _, parsed, text = _parsed(tmp_path, metadata)
  assert "cc_model_filenames" not in parsed and "default_model_filename" not in parsed
  assert ("# a version-compatible plan: start tritonserver with --backend-config=tensorrt,version-compatible=true "
          "to load it with a later TensorRT") in text.splitlines()
