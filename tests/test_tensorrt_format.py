"""The `trt` format: everything around the TensorRT call, on real files, real ONNX Runtime and real cuda-python.

Profiles from captured shapes, the timing cache's key and its distrust of stale, foreign and corrupt caches,
the metadata beside a plan, the options, the skip path and its exact message, cuda-python's own error without
a driver, and the runner's binding logic run against ONNX Runtime through the runner TensorRT plans use.
Every outcome that depends on TensorRT is asserted for both kinds of machine: here (no TensorRT, no GPU) and
on a GPU machine, where `tests/test_trt_engines_tier.py` builds and runs real engines.
"""

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os

import numpy as np
import pytest

from tftrt_keras.options import ConversionOptions
from tftrt_keras.formats.tensorrt import cuda_devices, profile as tensorrt_profile
from tftrt_keras.formats.tensorrt import format as trt_format
from tftrt_keras.formats.tensorrt import variant
from tftrt_keras.formats.base import BuildJob, VariantUnavailable
from tftrt_keras.formats.tensorrt.binding import (BindingError, EngineBinding, EngineRunner, TensorSpec, match_outputs,
                                                output_array)
from tftrt_keras.formats.tensorrt.build import TENSORRT_INSTALL
from tftrt_keras.formats.tensorrt.cache import CacheKey, TimingCacheStore
from tftrt_keras.formats.tensorrt.profile import ProfileError, batch_range, engine_profile, in_profile

FEATURES, CLASSES = 16, 5
HAS_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None


# --- profiles from captured shapes ---------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("sizes, max_batch_size, expected", [
    ([32, 32, 32, 17], None, (1, 32, 32)),  # the last, partial batch does not decide
    ([32, 32, 32, 17], 64, (1, 32, 64)),
    ([32, 32, 32, 17], 16, (1, 16, 16)),  # opt never above max
    ([8, 16], None, (1, 16, 16)),  # a tie goes to the larger size
    ([4, 4, 8, 8, 8, 2], 100, (1, 8, 100)),
    ([], None, (1, 1, 1)),  # nothing captured: batch 1 only
    ([], 8, (1, 8, 8)),  # nothing captured: tuned for the max
])
def test_batch_range(sizes, max_batch_size, expected):
  assert batch_range(sizes, max_batch_size) == expected


@pytest.mark.unit
def test_profile_static_features_dynamic_batch():
  inputs = [{"name": "features", "dtype": "float32", "shape": [None, FEATURES]}]
  assert engine_profile(inputs, [32, 32, 10], 64) == {
      "features": {"min": [1, FEATURES], "opt": [32, FEATURES], "max": [64, FEATURES]}}


@pytest.mark.unit
def test_profile_dynamic_sequence_length_from_ragged_samples():
  inputs = [{"name": "tokens", "dtype": "int32", "shape": [None, None]},
            {"name": "image", "dtype": "float32", "shape": [None, None, None, 3]}]
  samples = {
      "tokens": [np.zeros((4, 10), "int32"), np.zeros((4, 20), "int32"), np.zeros((2, 20), "int32")],
      "image": np.zeros((10, 96, 128, 3), "float32"),
  }
  profile = engine_profile(inputs, [4, 4, 2], None, samples)
  assert profile["tokens"] == {"min": [1, 10], "opt": [4, 20], "max": [4, 20]}
  assert profile["image"] == {"min": [1, 96, 128, 3], "opt": [4, 96, 128, 3], "max": [4, 96, 128, 3]}


@pytest.mark.unit
def test_profile_static_batch_and_unknown_rank():
  inputs = [{"name": "fixed", "dtype": "float32", "shape": [1, 8]},
            {"name": "anything", "dtype": "float32", "shape": None}]
  profile = engine_profile(inputs, [16], 16, {"anything": np.zeros((16, 3, 7), "float32")})
  assert profile["fixed"] == {"min": [1, 8], "opt": [1, 8], "max": [1, 8]}
  assert profile["anything"] == {"min": [1, 3, 7], "opt": [16, 3, 7], "max": [16, 3, 7]}


@pytest.mark.unit
def test_profile_errors_name_the_input_and_dimension():
  with pytest.raises(ProfileError, match=r"input `tokens` dimension 1 is dynamic .* no samples"):
    engine_profile([{"name": "tokens", "shape": [None, None]}], [8], None, None)
  with pytest.raises(ProfileError, match=r"input `x` dimension 1 is 16 in the model but the captured samples have \[12\]"):
    engine_profile([{"name": "x", "shape": [None, 16]}], [8], None, {"x": np.zeros((8, 12))})
  with pytest.raises(ProfileError, match=r"input `x` has an unknown rank"):
    engine_profile([{"name": "x", "shape": None}], [8], None, None)
  with pytest.raises(ProfileError, match=r"input `x` has rank 2 in the model"):
    engine_profile([{"name": "x", "shape": [None, 4]}], [8], None, {"x": np.zeros((8, 4, 4))})


@pytest.mark.unit
def test_in_profile():
  profile = {"min": [1, 10], "opt": [8, 20], "max": [8, 20]}
  assert in_profile((8, 20), profile) is None
  assert in_profile((1, 10), profile) is None
  assert in_profile((9, 20), profile) == "batch size 9 is outside the engine's profile (1..8)"
  assert in_profile((2, 21), profile) == "dimension 1 21 is outside the engine's profile (10..20)"
  assert in_profile((2,), profile) == "rank 1 instead of 2"


@pytest.mark.unit
def test_needs_samples_only_for_dynamic_non_batch_dimensions():
  assert not variant.needs_samples([{"name": "x", "shape": [None, 16]}])
  assert variant.needs_samples([{"name": "x", "shape": [None, None]}])
  assert variant.needs_samples([{"name": "x", "shape": None}])
  assert variant.needs_samples([{"name": "x", "shape": [None, "seq"]}])  # a symbolic ONNX dimension


# --- the timing cache ----------------------------------------------------------------------------------------

KEY = CacheKey("NVIDIA A10G", "8.6", "10.3.0")


@pytest.mark.unit
def test_cache_key_and_paths(tmp_path):
  store = TimingCacheStore(tmp_path)
  cache_path, key_path = store.paths(KEY)
  assert KEY.file_stem() == "NVIDIA-A10G-sm8.6-trt10.3.0"
  assert cache_path == str(tmp_path / ".trt_timing_cache" / "NVIDIA-A10G-sm8.6-trt10.3.0.cache")
  assert key_path == cache_path[:-len(".cache")] + ".json"
  assert KEY.to_json() == {"gpu_name": "NVIDIA A10G", "compute_capability": "8.6", "tensorrt_version": "10.3.0"}


@pytest.mark.unit
def test_cache_round_trip(tmp_path):
  store = TimingCacheStore(tmp_path)
  first = store.load(KEY)
  assert first.data is None and first.status.startswith("new: no timing cache yet for NVIDIA A10G")
  data = os.urandom(4096)
  store.save(KEY, data)
  loaded = store.load(KEY)
  assert loaded.data == data
  assert loaded.status == "reused: NVIDIA-A10G-sm8.6-trt10.3.0.cache (4096 bytes)"
  record = json.loads(open(store.paths(KEY)[1]).read())
  assert record["gpu_name"] == "NVIDIA A10G" and record["bytes"] == 4096 and len(record["sha256"]) == 64
  # Nothing half-written is left beside it.
  assert sorted(os.listdir(store.directory)) == ["NVIDIA-A10G-sm8.6-trt10.3.0.cache", "NVIDIA-A10G-sm8.6-trt10.3.0.json"]


def _plant(store, made_for, used_as, data=b"timings"):
  """Saves a cache made for `made_for` where `used_as` would look for its own (a copied or renamed cache)."""
  store.save(made_for, data)
  for source, target in zip(store.paths(made_for), store.paths(used_as)):
    if source != target:
      os.replace(source, target)


@pytest.mark.unit
@pytest.mark.parametrize("made_for, fragment", [
    (CacheKey("Tesla T4", "7.5", "10.3.0"), "made on Tesla T4 (compute capability 7.5) with TensorRT 10.3.0; "
                                             "this build runs on NVIDIA A10G (compute capability 8.6) with TensorRT 10.3.0"),
    (CacheKey("NVIDIA A10G", "8.6", "8.6.1"), "made on NVIDIA A10G (compute capability 8.6) with TensorRT 8.6.1"),
])
def test_foreign_cache_is_ignored_with_the_reason_logged(tmp_path, caplog, made_for, fragment):
  store = TimingCacheStore(tmp_path)
  _plant(store, made_for, KEY)
  with caplog.at_level(logging.WARNING, logger="absl"):  # the cache logs through absl
    loaded = store.load(KEY)
  assert loaded.data is None
  assert loaded.status.startswith("ignored: it was ") and fragment in loaded.status
  assert fragment in caplog.text


@pytest.mark.unit
def test_corrupt_cache_is_ignored(tmp_path, caplog):
  store = TimingCacheStore(tmp_path)
  store.save(KEY, b"x" * 100)
  cache_path, key_path = store.paths(KEY)
  with open(cache_path, "r+b") as f:
    f.write(b"y")  # one flipped byte, same size
  with caplog.at_level(logging.WARNING, logger="absl"):  # the cache logs through absl
    loaded = store.load(KEY)
  assert loaded == type(loaded)(None, "ignored: its bytes do not match the size and SHA-256 in its key file "
                                      "(corrupt or partly written)")
  assert "corrupt or partly written" in caplog.text
  with open(cache_path, "ab") as f:
    f.write(b"more")  # a cache replaced without its key (a crash between the two writes)
  assert store.load(KEY).data is None
  store.save(KEY, b"fresh")  # the next build's cache replaces it, and is trusted again
  assert store.load(KEY).data == b"fresh"


@pytest.mark.unit
def test_cache_without_or_with_a_broken_key_file_is_ignored(tmp_path):
  store = TimingCacheStore(tmp_path)
  store.save(KEY, b"timings")
  cache_path, key_path = store.paths(KEY)
  with open(key_path, "w") as f:
    f.write("{not json")
  assert store.load(KEY).status.startswith("ignored: its key file is unreadable (JSONDecodeError")
  with open(key_path, "w") as f:
    json.dump({"gpu_name": "NVIDIA A10G"}, f)
  assert store.load(KEY).status == "ignored: its key file is not a tftrt_keras.trt_timing_cache/1 key"
  os.remove(key_path)
  assert store.load(KEY).status == ("ignored: its key file NVIDIA-A10G-sm8.6-trt10.3.0.json is missing, so nothing "
                                    "says which GPU and TensorRT made it")


# --- options -------------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_options_defaults_and_round_trip():
  options = ConversionOptions(formats=("onnx", "trt"), format_options={"trt": {"workspace_mb": 512, "device": 1}})
  trt_options = options.options_for("trt")
  assert trt_options == trt_format.TensorRTOptions(workspace_mb=512, device=1)
  assert trt_options.timing_cache is True and trt_options.cuda_binding == "cuda-python"
  assert ConversionOptions.from_json(json.loads(json.dumps(options.to_json()))).options_for("trt") == trt_options
  assert (trt_options.hardware_compatibility, trt_options.version_compatible, trt_options.exclude_lean_runtime) == (
      "none", False, False)
  portable = ConversionOptions(formats=("trt",), format_options={"trt": {
      "hardware_compatibility": "ampere_plus", "version_compatible": True, "exclude_lean_runtime": True}})
  assert ConversionOptions.from_json(json.loads(json.dumps(portable.to_json()))).options_for("trt") == (
      trt_format.TensorRTOptions(hardware_compatibility="ampere_plus", version_compatible=True,
                                 exclude_lean_runtime=True))


@pytest.mark.unit
@pytest.mark.parametrize("values, message", [
    ({"workspace_mb": 0}, "Invalid value for argument `format_options['trt'].workspace_mb`. Received: "
                          "format_options['trt'].workspace_mb=0. Expected None or an integer >= 1."),
    ({"builder_optimization_level": 6}, "`format_options['trt'].builder_optimization_level`. Received: "
                                        "format_options['trt'].builder_optimization_level=6. Expected None or an "
                                        "integer from 0 to 5."),
    ({"device": -1}, "`format_options['trt'].device`"),
    ({"device": True}, "`format_options['trt'].device`"),
    ({"timing_cache": "yes"}, "`format_options['trt'].timing_cache`. Received: format_options['trt'].timing_cache="
                              "'yes'. Expected True or False."),
    ({"cuda_binding": "cupy"}, "Expected one of ('cuda-python', 'pycuda')."),
    ({"hardware_compatibility": "AMPERE_PLUS"}, "`format_options['trt'].hardware_compatibility`. Received: "
                                                "format_options['trt'].hardware_compatibility='AMPERE_PLUS'. Expected "
                                                "one of ('none', 'ampere_plus', 'same_compute_capability')."),
    ({"version_compatible": 1}, "`format_options['trt'].version_compatible`. Received: "
                                "format_options['trt'].version_compatible=1. Expected True or False."),
    ({"exclude_lean_runtime": True}, "Expected False unless version_compatible=True. Only a version-compatible "
                                     "plan carries a lean runtime to leave out."),
    ({"workspace": 1}, "Unknown: ['workspace']."),
])
def test_bad_options_name_the_argument(values, message):
  with pytest.raises(ValueError) as raised:
    ConversionOptions(formats=("trt",), format_options={"trt": values})
  assert message in str(raised.value)


# --- can it run here? ----------------------------------------------------------------------------------------

def _gpu(index=0, name="NVIDIA A10G", cc="8.6"):
  return cuda_devices.Gpu(index, name, cc, 22731)


_READY = trt_format.TensorRTProbe("10.3.0", None, "12.9.4", None, (_gpu(),), False)


@pytest.mark.unit
def test_unavailable_text_for_each_missing_piece():
  assert trt_format.unavailable_text(_READY) is None
  assert trt_format.unavailable_text(_READY, device=0) is None
  no_trt = dataclasses.replace(_READY, tensorrt_version=None, tensorrt_error="ModuleNotFoundError: No module named "
                                                                             "'tensorrt'")
  assert trt_format.unavailable_text(no_trt) == (
      "TensorRT engines cannot be built here: TensorRT's Python package does not import (ModuleNotFoundError: No "
      f"module named 'tensorrt'). To build them: install TensorRT: {TENSORRT_INSTALL}.")
  no_cuda_python = dataclasses.replace(_READY, cuda_python_version=None, cuda_error="cuda-python is not installed",
                                       gpus=())
  assert trt_format.unavailable_text(no_cuda_python) == (
      "TensorRT engines cannot be built here: no GPU can be looked for: cuda-python is not installed. To build them: "
      "`pip install cuda-python` (finds the GPU and runs the engines).")
  no_gpu = dataclasses.replace(_READY, gpus=())
  assert "no GPU is visible (CUDA counts 0 devices)" in trt_format.unavailable_text(no_gpu)
  assert trt_format.unavailable_text(_READY, device=2) == (
      "TensorRT engines cannot be built here: format_options['trt'].device=2 but the export worker sees 1 GPU(s): "
      "0: NVIDIA A10G. To build them: pass a device index below 1.")


def _expected_reason_here(status):
  """The exact reason for the machine the test runs on, spelled out for the cases these machines have."""
  if status.usable:
    return None
  problems, fixes = [], []
  if status.tensorrt_version is None:
    assert importlib.util.find_spec("tensorrt") is None, status.tensorrt_error  # else: it exists but fails to load
    problems.append("TensorRT's Python package does not import (ModuleNotFoundError: No module named 'tensorrt')")
    fixes.append(f"install TensorRT: {TENSORRT_INSTALL}")
  if not HAS_CUDA_PYTHON:
    problems.append("no GPU can be looked for: cuda-python is not installed")
    fixes.append("`pip install cuda-python` (finds the GPU and runs the engines)")
  elif not os.path.exists("/proc/driver/nvidia"):
    problems.append("no GPU is visible (cudaGetDeviceCount failed: cudaErrorInsufficientDriver (no NVIDIA driver "
                    "is loaded: this machine has no usable GPU))")
    fixes.append("run the export on a machine with an NVIDIA GPU and driver")
  else:
    pytest.skip(f"a machine with a driver but no usable TensorRT/GPU: {status.to_json()}")
  return f"TensorRT engines cannot be built here: {'; '.join(problems)}. To build them: {'; '.join(fixes)}."


@pytest.mark.unit
def test_skip_reason_on_this_machine():
  status = trt_format.probe(refresh=True)
  reason = trt_format.FORMAT.unavailable_reason(ConversionOptions(formats=("trt",)))
  assert reason == _expected_reason_here(status)
  environment = trt_format.FORMAT.environment(ConversionOptions(formats=("trt",)))
  assert environment["tensorrt"] == status.tensorrt_version and environment["gpu_count"] == len(status.gpus)
  assert environment["cuda_binding"] == "cuda-python"
  json.dumps(environment)


@pytest.mark.unit
def test_cuda_python_error_path_or_a_real_device():
  """Without a driver cuda-python imports and its calls fail with CUDA's own error; with one, memory works."""
  from tftrt_keras.formats.tensorrt import cuda_runner  # pylint: disable=g-import-not-at-top
  if not HAS_CUDA_PYTHON:
    with pytest.raises(cuda_devices.CudaUnavailable, match=r"cuda-python is not installed .*`pip install cuda-python`"):
      cuda_devices.list_gpus()
    return
  try:
    gpus = cuda_devices.list_gpus()
  except cuda_devices.CudaUnavailable as err:
    assert str(err).startswith("cudaGetDeviceCount failed: cudaError")
    with pytest.raises(cuda_devices.CudaUnavailable, match=r"^cudaSetDevice\(0\) failed: cudaError\w+(: | \()"):
      cuda_runner.open_memory("cuda-python", 0)
    # pycuda asked for but absent (it cannot even be built without a driver): cuda-python's error, not pycuda's.
    with pytest.raises(cuda_devices.CudaUnavailable, match=r"^cudaSetDevice\(0\) failed"):
      cuda_runner.open_memory("pycuda", 0)
    return
  assert gpus and all(gpu.compute_capability.count(".") == 1 for gpu in gpus)
  assert str(cuda_runner.open_memory("pycuda", 0).binding) in ("pycuda", "cuda-python")
  memory = cuda_runner.open_memory("cuda-python", 0)
  try:
    host = np.arange(1000, dtype="float32")
    back = np.empty_like(host)
    address = memory.alloc(host.nbytes)
    memory.to_device(address, host)
    memory.to_host(back, address)
    memory.synchronize()
    memory.free(address)
    np.testing.assert_array_equal(back, host)
  finally:
    memory.close()


@pytest.mark.unit
@pytest.mark.skipif(not HAS_CUDA_PYTHON, reason="cuda-python is not installed (`pip install cuda-python`)")
def test_every_cuda_python_memory_call_reaches_cuda():
  """The runner's memory calls on the default stream: on a GPU they move data; without a driver each one gets
  as far as CUDA and fails with CUDA's own error (no argument cuda-python would refuse as a TypeError)."""
  from tftrt_keras.formats.tensorrt.cuda_runner import CudaPythonMemory  # pylint: disable=g-import-not-at-top
  memory = CudaPythonMemory(stream=cuda_devices.runtime().cudaStream_t(0))
  assert memory.stream_handle == 0
  host = np.arange(64, dtype="float32")
  back = np.zeros_like(host)
  try:
    gpus = cuda_devices.list_gpus()
  except cuda_devices.CudaUnavailable:
    gpus = []
  if gpus:
    address = memory.alloc(host.nbytes)
    memory.to_device(address, host)
    memory.to_host(back, address)
    memory.synchronize()
    memory.free(address)
    np.testing.assert_array_equal(back, host)
  else:
    calls = {"cudaMalloc(256)": lambda: memory.alloc(host.nbytes),
             "cudaMemcpyAsync(host to device)": lambda: memory.to_device(1 << 20, host),
             "cudaMemcpyAsync(device to host)": lambda: memory.to_host(back, 1 << 20),
             "cudaStreamSynchronize": memory.synchronize, "cudaFree": lambda: memory.free(1 << 20)}
    for name, call in calls.items():
      with pytest.raises(cuda_devices.CudaUnavailable) as raised:
        call()
      assert str(raised.value).startswith(f"{name} failed: cudaError"), str(raised.value)
  memory.close()  # the default stream is not ours: nothing to destroy, no error


# --- what a plan's model.json says ---------------------------------------------------------------------------

_INSPECTOR = {  # the engine inspector's JSON at DETAILED verbosity (fields as TensorRT 10 writes them)
    "Layers": [
        {"Name": "x_quantize", "LayerType": "Scale", "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}]},
        {"Name": "conv + relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "xq", "Format/Datatype": "Channel major INT8 format where channel % 32 == 0"}]},
        {"Name": "reformat", "LayerType": "Reformat", "Inputs": [{"Name": "y", "Format/Datatype": "Int8"}]},
        {"Name": "gemm", "LayerType": "CaskGemm", "Inputs": [{"Name": "z", "Format/Datatype": "Half"}]},
        {"Name": "softmax", "LayerType": "CaskSoftMaxV2", "Inputs": [{"Name": "w", "Format/Datatype": "Float"}]},
    ],
    "Bindings": ["x", "probabilities"],
}


@pytest.mark.unit
def test_layer_precisions_from_the_engine_inspector():
  assert variant.layer_precisions(_INSPECTOR) == {"fp16": 1, "fp32": 2, "int8": 1}
  assert variant.layer_precisions({"Layers": ["conv", "relu"]}) == {"unknown": 2}  # built without DETAILED
  assert variant.layer_precisions(None) == {}


FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "trt_inspector_int8.json")


@pytest.mark.unit
@pytest.mark.parametrize("engine", ["tensorrt_8_6", "tensorrt_10_myelin", "tensorrt_11_uint8_image",
                                    "tensorrt_8_6_no_context"])
def test_int8_layers_are_counted_by_what_they_compute(engine):
  """Inspector JSON in TensorRT 8.6/10/11's documented layouts (tests/fixtures: written by hand, see its
  `_source`): a Myelin layer fusing the Quantize into the GEMM reads Float and is INT8 (the first-input rule said
  fp32 and failed a correct INT8 engine); "UInt8" is not "Int8"; a lone Quantize/Dequantize computes nothing in
  INT8; "N/A due to dynamic shapes" is unknown, not another precision."""
  with open(FIXTURE) as f:
    case = json.load(f)["engines"][engine]
  assert variant.layer_precisions(case["information"]) == case["expected"]


@pytest.mark.unit
def test_an_int8_engine_whose_int8_is_only_an_unfused_qdq_pair_is_refused():
  with open(FIXTURE) as f:
    image = json.load(f)["engines"]["tensorrt_11_uint8_image"]["information"]
  assert "int8" not in variant.layer_precisions(image)


@pytest.mark.unit
def test_engine_metadata(tmp_path):
  """`model.json` of a `trt` plan, from a real `BuiltEngine` (TensorRT-RTX's builder answers here; TensorRT's
  returns the same record on a GPU machine)."""
  pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed: pip install 'tftrt_keras[trt_rtx]'")
  pytest.importorskip("onnx", reason="onnx is not installed: pip install 'tftrt_keras[onnx]'")
  from tests import engine_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt import build  # pylint: disable=g-import-not-at-top
  onnx_dir = engine_models.conv_relu(tmp_path / "onnx_int8")
  profile = engine_models.conv_relu_profile()
  built = build.build_engine(os.path.join(onnx_dir, "model.onnx"), build.BuildSettings("INT8", 1 << 30), profile,
                             build.TENSORRT_RTX)
  checks = {"plan": "passed: ..."}
  metadata = trt_format.engine_metadata(
      precision="INT8", source_artifact="onnx_int8", source_sha256="ab" * 32, built=built, gpu=_gpu(),
      profile=profile, builder_options={"workspace_bytes": 1 << 30, "builder_optimization_level": None, "device": 0},
      timing_cache="reused: x.cache (2 bytes)", layers={"int8": 3}, checks=checks, created=1700000000.0)
  assert metadata == {
      "format": "trt", "file": "model.plan", "precision": "INT8", "tensorrt_version": built.tensorrt_version,
      "gpu_name": "NVIDIA A10G", "compute_capability": "8.6",
      "gpu": {"index": 0, "name": "NVIDIA A10G", "compute_capability": "8.6", "memory_mb": 22731},
      "profiles": profile,
      "builder": {"workspace_bytes": 1 << 30, "builder_optimization_level": None, "device": 0, "strongly_typed": True,
                  "builder_flags": [], "timing_cache": "reused: x.cache (2 bytes)"},
      "source": {"artifact": "onnx_int8", "file": "model.onnx", "sha256": "ab" * 32},
      "build_seconds": round(built.seconds, 3), "engine_bytes": len(built.plan),
      "engine_sha256": hashlib.sha256(built.plan).hexdigest(),
      "checks": checks,
      "layers_by_precision": {"int8": 3},
      "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 3, 8, 8]}],
      "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 4, 8, 8]}],
      "builder_warnings": built.warnings, "created": 1700000000.0,
  }
  json.dumps(metadata)


@pytest.mark.unit
def test_model_io_prefers_the_onnx_model_json(tmp_path):
  signature = {"inputs": [{"name": "features", "dtype": "float32", "shape": [None, FEATURES]}],
               "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, CLASSES]}]}
  assert variant.model_io(str(tmp_path), signature) == signature
  described = {"inputs": [{"name": "features", "dtype": "float16", "shape": [None, FEATURES]}],
               "outputs": [{"name": "probabilities", "dtype": "float16", "shape": [None, CLASSES]}]}
  (tmp_path / "model.json").write_text(json.dumps(dict(described, opset=17)))
  assert variant.model_io(str(tmp_path), signature) == described


# --- binding feeds to an engine (pure) -----------------------------------------------------------------------

_INPUTS = [TensorSpec("features", "float32", (None, FEATURES)), TensorSpec("scale", "float32", (None, 1))]
_OUTPUTS = [TensorSpec("logits", "float32", (None, CLASSES)), TensorSpec("probabilities", "float16", (None, CLASSES))]
_PROFILE = {"features": {"min": [1, FEATURES], "opt": [4, FEATURES], "max": [8, FEATURES]},
            "scale": {"min": [1, 1], "opt": [4, 1], "max": [8, 1]}}
_SIGNATURE = {"inputs": [{"name": "features", "dtype": "float32", "shape": [None, FEATURES]},
                         {"name": "scale", "dtype": "float32", "shape": [None, 1]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, CLASSES]},
                          {"name": "probabilities", "dtype": "float32", "shape": [None, CLASSES]}]}


def _feeds(batch, dtype="float32"):
  rng = np.random.default_rng(batch)
  return {"features": rng.normal(size=(batch, FEATURES)).astype(dtype), "scale": np.ones((batch, 1), dtype)}


@pytest.mark.unit
def test_binding_accepts_and_casts():
  binding = EngineBinding(_INPUTS, _OUTPUTS, _PROFILE, _SIGNATURE)
  arrays = binding.engine_inputs(_feeds(8, "float64"))  # float64 -> float32 is a same-kind cast
  assert {k: (v.dtype.name, v.shape, v.flags["C_CONTIGUOUS"]) for k, v in arrays.items()} == {
      "features": ("float32", (8, FEATURES), True), "scale": ("float32", (8, 1), True)}
  strided = {"features": np.zeros((3, 2 * FEATURES), "float32")[:, ::2], "scale": np.ones((3, 1), "float32")}
  assert binding.engine_inputs(strided)["features"].flags["C_CONTIGUOUS"]  # engines read packed memory


@pytest.mark.unit
@pytest.mark.parametrize("feeds, message", [
    ({"features": np.zeros((2, FEATURES), "float32")},
     "the engine takes inputs ['features', 'scale']; missing ['scale'], unknown []"),
    (dict(_feeds(2), extra=np.zeros(2)), "the engine takes inputs ['features', 'scale']; missing [], unknown ['extra']"),
    (dict(_feeds(2), features=np.zeros((2, FEATURES), "int32")), "input `features` is int32; the engine takes float32"),
    (dict(_feeds(2), features=np.zeros((2, FEATURES, 1), "float32")),
     "input `features` has shape (2, 16, 1); the engine takes rank 2 (?, 16)"),
    (dict(_feeds(2), features=np.zeros((2, 15), "float32")),
     "input `features` has shape (2, 15); the engine takes (?, 16) (dimension 1 must be 16)"),
    (_feeds(9), "input `features` has shape (9, 16): batch size 9 is outside the engine's profile (1..8); serve it "
                "in smaller pieces or rebuild with a larger max_batch_size"),
])
def test_binding_refuses_with_a_reason(feeds, message):
  binding = EngineBinding(_INPUTS, _OUTPUTS, _PROFILE, _SIGNATURE)
  with pytest.raises(BindingError) as raised:
    binding.engine_inputs(feeds)
  assert str(raised.value) == message


@pytest.mark.unit
def test_outputs_come_back_under_the_signature_names_and_dtypes():
  binding = EngineBinding(_INPUTS, _OUTPUTS, _PROFILE, _SIGNATURE)
  results = {"logits": np.ones((2, CLASSES), "float32"), "probabilities": np.full((2, CLASSES), 0.2, "float16")}
  outputs = binding.signature_outputs(results)
  assert {k: v.dtype.name for k, v in outputs.items()} == {"logits": "float32", "probabilities": "float32"}
  np.testing.assert_allclose(outputs["probabilities"], 0.2, atol=1e-3)
  assert output_array(_OUTPUTS[1], (3, CLASSES)).shape == (3, CLASSES)
  with pytest.raises(BindingError, match=r"output `logits` has a data-dependent shape \(-1, 5\)"):
    output_array(_OUTPUTS[0], (-1, CLASSES))


@pytest.mark.unit
def test_match_outputs():
  sig = [{"name": "probabilities"}, {"name": "logits"}]
  assert match_outputs(_OUTPUTS, sig) == {"logits": "logits", "probabilities": "probabilities"}
  graph_named = [TensorSpec("probabilities:0", "float32", None), TensorSpec("logits:0", "float32", None)]
  assert match_outputs(graph_named, sig) == {"probabilities:0": "probabilities", "logits:0": "logits"}
  assert match_outputs([TensorSpec("Identity:0", "float32", None)], [{"name": "scores"}]) == {"Identity:0": "scores"}
  with pytest.raises(BindingError, match=r"the engine's outputs \['Identity:0', 'Identity_1:0'\] do not match"):
    match_outputs([TensorSpec("Identity:0", "f", None), TensorSpec("Identity_1:0", "f", None)], sig)


# --- the runner against ONNX Runtime, and the format on real files ---------------------------------------------

class _TwoHeads:
  """Features (batch x 16) and a per-sample scale -> logits and probabilities: two inputs, two outputs."""

  def __init__(self, tf):
    rng = np.random.default_rng(0)
    self.module = tf.Module()
    self.module.w = tf.Variable(rng.normal(scale=0.5, size=(FEATURES, CLASSES)).astype("float32"))
    self.module.b = tf.Variable(rng.normal(scale=0.1, size=(CLASSES,)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="features"),
                                  tf.TensorSpec([None, 1], tf.float32, name="scale")])
    def serve(features, scale):
      logits = (tf.matmul(features, self.module.w) + self.module.b) * scale
      return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    self.module.serve = serve


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
  """A tiny SavedModel, and its ONNX conversion with a model.json in the ONNX variant's schema."""
  tf = pytest.importorskip("tensorflow")
  tf2onnx = pytest.importorskip("tf2onnx", reason="tf2onnx is not installed in this environment")
  pytest.importorskip("onnxruntime", reason="onnxruntime is not installed in this environment")
  base = tmp_path_factory.mktemp("trt_format")
  model = _TwoHeads(tf)
  tf.saved_model.save(model.module, str(base / "native"), signatures={"serving_default": model.module.serve})
  onnx_dir = base / "onnx_fp32"
  onnx_dir.mkdir()
  tf2onnx.convert.from_function(model.module.serve, input_signature=model.module.serve.input_signature, opset=17,
                                output_path=str(onnx_dir / "model.onnx"))
  io = {"inputs": _SIGNATURE["inputs"], "outputs": _SIGNATURE["outputs"]}
  (onnx_dir / "model.json").write_text(json.dumps(dict(io, opset=17)))
  loaded = tf.saved_model.load(str(base / "native"))
  reference = {}
  for batch in range(1, 9):
    outputs = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in _feeds(batch).items()})
    reference[batch] = {k: v.numpy() for k, v in outputs.items()}
  return base, onnx_dir, reference


def _ort_runner(onnx_dir, batch_sizes, max_batch_size):
  from tests.onnxruntime_engine_for_tests import OnnxRuntimeEngineForTests  # pylint: disable=g-import-not-at-top
  io = variant.model_io(str(onnx_dir), _SIGNATURE)
  profile = engine_profile(io["inputs"], batch_sizes, max_batch_size)
  return EngineRunner(OnnxRuntimeEngineForTests(str(onnx_dir / "model.onnx"), profile), _SIGNATURE)


@pytest.mark.tf
def test_runner_serves_every_batch_in_the_profile_against_onnx_runtime(onnx_model):
  _, onnx_dir, reference = onnx_model
  with _ort_runner(onnx_dir, [8, 8, 3], max_batch_size=None) as runner:
    assert runner.binding.profile["features"] == {"min": [1, FEATURES], "opt": [8, FEATURES], "max": [8, FEATURES]}
    for batch in range(1, 9):
      outputs = runner.run(_feeds(batch))
      assert sorted(outputs) == ["logits", "probabilities"]
      for name, expected in reference[batch].items():
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(BindingError, match=r"batch size 9 is outside the engine's profile \(1..8\)"):
      runner.run(_feeds(9))
    assert runner.executor.calls == 8  # the refused batch never reached the engine


@pytest.mark.tf
def test_prepared_calls_for_different_batches_alternate(onnx_model):
  """Verification prepares batch 1 and the largest batch and times each many times: calls must not interfere."""
  _, onnx_dir, reference = onnx_model
  with _ort_runner(onnx_dir, [8], max_batch_size=8) as runner:
    small, large = runner.prepared_call(_feeds(1)), runner.prepared_call(_feeds(8))
    for call, batch in ((large, 8), (small, 1), (large, 8), (small, 1)):
      np.testing.assert_allclose(call()["probabilities"], reference[batch]["probabilities"], rtol=1e-5, atol=1e-6)


@pytest.mark.tf
def test_fp16_engine_outputs_return_in_the_signature_dtype(onnx_model, tmp_path):
  """An FP16 model whose I/O is float16 still takes the signature's float32 feeds and returns float32."""
  float16 = pytest.importorskip("onnxconverter_common.float16", reason="onnxconverter-common is not installed")
  import onnx  # pylint: disable=g-import-not-at-top
  _, onnx_dir, reference = onnx_model
  half = float16.convert_float_to_float16(onnx.load(str(onnx_dir / "model.onnx")), keep_io_types=False)
  onnx.save(half, str(tmp_path / "model.onnx"))
  with _ort_runner(tmp_path, [4], max_batch_size=8) as runner:
    assert {s.name: s.dtype for s in runner.executor.inputs} == {"features": "float16", "scale": "float16"}
    outputs = runner.run(_feeds(4))
    assert outputs["probabilities"].dtype == np.float32
    np.testing.assert_allclose(outputs["probabilities"], reference[4]["probabilities"], atol=1e-2)


def _job(root, native_dir, options, batch_sizes=(8, 8, 4)):
  return BuildJob(root=str(root), version=1, native_dir=str(native_dir), signature_key="serving_default",
                  signature=_SIGNATURE, options=options, calibration_batch_sizes=list(batch_sizes),
                  load_calibration=lambda: _feeds(20))


@pytest.mark.tf
def test_build_on_this_machine(onnx_model, tmp_path):
  """Here: `VariantUnavailable` with the preflight's reason, nothing written. On a GPU: a plan and its model.json."""
  base, onnx_dir, _ = onnx_model
  options = ConversionOptions(formats=("onnx", "trt"), precisions=("FP32",), max_batch_size=16)
  job = _job(tmp_path, base / "native", options)
  out = tmp_path / "trt_fp32"
  out.mkdir()
  status = trt_format.probe()
  if not status.usable:
    with pytest.raises(VariantUnavailable) as raised:
      trt_format.FORMAT.build(job, "FP32", str(onnx_dir), str(out))
    assert str(raised.value) == _expected_reason_here(status)
    assert not os.listdir(out) and not os.path.exists(tmp_path / ".trt_timing_cache")
    return
  details = trt_format.FORMAT.build(job, "FP32", str(onnx_dir), str(out))
  assert sorted(os.listdir(out)) == ["model.json", "model.plan"]
  metadata = json.loads((out / "model.json").read_text())
  assert metadata["profiles"]["features"] == {"min": [1, FEATURES], "opt": [8, FEATURES], "max": [16, FEATURES]}
  assert metadata["source"]["sha256"] == variant.file_sha256(str(onnx_dir / "model.onnx"))
  assert metadata["engine_bytes"] == os.path.getsize(out / "model.plan") == details["engine_bytes"]
  assert [i["name"] for i in metadata["inputs"]] == ["features", "scale"]
  assert details["timing_cache"].startswith("new: ")


@pytest.mark.tf
def test_manifest_records_trt_variants(onnx_model, tmp_path):
  """Through the whole offline export: here every trt_* is `skipped` with the reason; on a GPU each is built."""
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  base, _, _ = onnx_model
  manifest = export_saved_model(
      str(base / "native"), str(tmp_path / "exports"), calibration_data=_feeds(40), calibration_batch_size=8,
      options=ConversionOptions(formats=("trt",), precisions=("FP32", "FP16", "INT8"), max_batch_size=8,
                                verification_samples=10))
  entries = {name: manifest["artifacts"][name] for name in ("trt_fp32", "trt_fp16", "trt_int8")}
  status = trt_format.probe()
  assert manifest["environment"]["formats"]["trt"]["gpu_count"] == len(status.gpus)
  if not status.usable:
    reason = _expected_reason_here(status)
    assert {name: (e["status"], e["reason"]) for name, e in entries.items()} == {
        name: ("skipped", reason) for name in entries}
    return
  # On a GPU every ONNX source builds (usable, `ok` or `unverified`), so every engine is built from it; judged on
  # the 10 held-out samples, FP32 by its error (`ok`), FP16 and INT8 also by top-1 agreement on its bounds, which
  # 10 samples cannot lift over 0.97: `unverified` (INT8 may even be rejected).
  accepted = {"trt_fp32": ("ok",), "trt_fp16": ("unverified",), "trt_int8": ("unverified", "rejected")}
  for name, entry in entries.items():
    assert entry["built_from"] == "onnx_" + name[len("trt_"):], entry
    assert entry["status"] in accepted[name], entry
    if entry["status"] == "unverified":
      assert "too few verification samples to tell" in entry["reason"], entry
    assert entry["engine_bytes"] > 0 and entry["compute_capability"] == status.gpus[0].compute_capability
