"""The `trt` tier for TensorRT engines: real TensorRT, a real GPU, nothing faked.

Builds `trt_fp32`, `trt_fp16` and `trt_int8` from the ONNX variants through the whole offline export (a small
MLP, and a MobileNetV2 under `slow`), then checks that each engine loads with TensorRT's own runtime, serves
every batch size from 1 to the max from the one plan, that the INT8 engine's layers really run INT8 (engine
inspector), that outputs agree with the ONNX variants run in ONNX Runtime, and that the timing cache is reused
by the next export and a foreign one ignored; and that TensorRT-RTX engines (`trt_rtx_*`) run and agree on a GPU
of a compute capability they target. Runs unchanged in an NVIDIA container (`scripts/run_gpu_tests.sh`);
elsewhere every test skips with the preflight's reason (the `trt` format's probe) or the GPUs a TensorRT-RTX plan
needs. What needs only a builder runs everywhere, against TensorRT-RTX (`tests/test_trt_rtx_format.py`).
"""

import hashlib
import json
import os

import numpy as np
import pytest

from tftrt_keras.options import ConversionOptions
from tftrt_keras.formats.tensorrt import format as trt_format
from tftrt_keras.formats.tensorrt import variant

# Every test here needs a GPU: `trt` (deselect them all with -m "not trt"); `trt_engines` for TensorRT's,
# `trt_rtx_gpu` for TensorRT-RTX's (scripts/run_gpu_tests.sh fails a TensorRT 10/11 run whose trt_engines skip).
pytestmark = [pytest.mark.trt, pytest.mark.tf]
trt_engines = pytest.mark.trt_engines
trt_rtx_gpu = pytest.mark.trt_rtx_gpu

FEATURES, HIDDEN, CLASSES, MAX_BATCH = 16, 64, 10, 16
VERIFICATION_SAMPLES = 64
PRECISIONS = ("FP32", "FP16", "INT8")
# Engine vs the ONNX variant it was built from, in ONNX Runtime: (max error relative to the output's scale,
# minimum top-1 agreement). INT8 Q/DQ rounds the same way in both, but kernels accumulate differently. FP32 at
# 1e-3 holds because FP32 engines are built without TF32 (its 10-bit mantissa errs by ~1e-3 by itself).
AGREEMENT = {"FP32": (1e-3, 1.0), "FP16": (1e-2, 0.97), "INT8": (0.1, 0.9)}


def expected_verdict(precision, samples=VERIFICATION_SAMPLES):
  """The status verification can give a good engine of `precision` judged on `samples` held-out samples: FP32 is
  judged by its error (`ok`); FP16 and INT8 also by top-1 agreement on its 95% lower bound, which even all
  `samples` agreeing puts below the gate when they are few (64 of 64: 0.959 < 0.97): `unverified`."""
  from tftrt_keras import agreement  # pylint: disable=g-import-not-at-top
  if precision == "FP32":
    return "ok"
  gate = ConversionOptions().verify_min_agreement
  return "ok" if agreement.agreement_lower_bound(samples, samples) >= gate else "unverified"


@pytest.fixture(scope="module")
def gpu_with_tensorrt():
  status = trt_format.probe()
  reason = trt_format.unavailable_text(status)
  if reason:
    pytest.skip(reason)
  return status


def _samples(n, seed, shape=(FEATURES,)):
  return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")


def _mlp_saved_model(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  module = tf.Module()
  module.w1 = tf.Variable(rng.normal(scale=0.3, size=(FEATURES, HIDDEN)).astype("float32"))
  module.w2 = tf.Variable(rng.normal(scale=0.3, size=(HIDDEN, CLASSES)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="features")])
  def serve(features):
    return {"probabilities": tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(features, module.w1)), module.w2))}

  module.serve = serve
  tf.saved_model.save(module, path, signatures={"serving_default": serve})
  return {"inputs": [{"name": "features", "dtype": "float32", "shape": [None, FEATURES]}],
          "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, CLASSES]}]}


def _export(saved_model, root, samples, precisions=PRECISIONS, formats=("onnx", "trt")):
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  return export_saved_model(saved_model, root, calibration_data=samples, calibration_batch_size=MAX_BATCH,
                            options=ConversionOptions(formats=formats, precisions=precisions,
                                                      max_batch_size=MAX_BATCH,
                                                      verification_samples=VERIFICATION_SAMPLES))


@pytest.fixture(scope="module")
def mlp_export(gpu_with_tensorrt, tmp_path_factory):  # pylint: disable=unused-argument,redefined-outer-name
  base = tmp_path_factory.mktemp("trt_engines")
  signature = _mlp_saved_model(str(base / "model"))
  manifest = _export(str(base / "model"), str(base / "exports"), {"features": _samples(512, seed=1)})
  return base, signature, manifest


def _artifact_dir(base, manifest, name):
  """The directory of a built, usable variant (`ok`, or `unverified`: on the 64 held-out samples here an FP16 or
  INT8 top-1 agreement cannot clear its 0.97 bound, see test_engine_is_ok_with_honest_metadata)."""
  entry = manifest["artifacts"][name]
  assert entry["status"] in ("ok", "unverified"), (name, entry)
  return os.path.normpath(os.path.join(base / "exports" / "manifests" / str(manifest["version"]), entry["path"]))


def _onnx_outputs(onnx_dir, feeds):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(os.path.join(onnx_dir, "model.onnx"), providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(names, feeds)))


@trt_engines
@pytest.mark.parametrize("precision", PRECISIONS)
def test_engine_is_ok_with_honest_metadata(mlp_export, precision, gpu_with_tensorrt):  # pylint: disable=redefined-outer-name
  base, signature, manifest = mlp_export
  name = f"trt_{precision.lower()}"
  path = _artifact_dir(base, manifest, name)
  assert sorted(os.listdir(path)) == ["model.json", "model.plan"]
  metadata = json.loads(open(os.path.join(path, "model.json")).read())
  onnx_dir = _artifact_dir(base, manifest, f"onnx_{precision.lower()}")
  assert metadata["source"] == {"artifact": f"onnx_{precision.lower()}", "file": "model.onnx",
                                "sha256": variant.file_sha256(os.path.join(onnx_dir, "model.onnx"))}
  assert metadata["compute_capability"] == gpu_with_tensorrt.gpus[0].compute_capability
  assert metadata["tensorrt_version"] == gpu_with_tensorrt.tensorrt_version
  assert metadata["profiles"] == {"features": {"min": [1, FEATURES], "opt": [MAX_BATCH, FEATURES],
                                               "max": [MAX_BATCH, FEATURES]}}
  assert [i["name"] for i in metadata["inputs"]] == ["features"]
  assert [o["name"] for o in metadata["outputs"]] == ["probabilities"]
  with open(os.path.join(path, "model.plan"), "rb") as f:
    plan = f.read()
  assert metadata["engine_bytes"] == len(plan) and metadata["engine_sha256"] == hashlib.sha256(plan).hexdigest()
  entry = manifest["artifacts"][name]
  assert entry["built_from"] == f"onnx_{precision.lower()}" and entry["engine_bytes"] == len(plan)
  assert "error" not in entry.get("verification", {}), entry["verification"]
  assert entry["status"] == expected_verdict(precision), entry
  if entry["status"] == "unverified":
    assert "too few verification samples to tell" in entry["reason"], entry
  assert metadata["compatibility"]["tf32"] is (precision != "FP32")  # read back from the builder


@trt_engines
@pytest.mark.parametrize("precision", PRECISIONS)
def test_plan_loads_with_tensorrts_own_runtime(mlp_export, precision):  # pylint: disable=redefined-outer-name
  import tensorrt  # pylint: disable=g-import-not-at-top
  base, _, manifest = mlp_export
  with open(os.path.join(_artifact_dir(base, manifest, f"trt_{precision.lower()}"), "model.plan"), "rb") as f:
    engine = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING)).deserialize_cuda_engine(f.read())
  assert engine is not None
  names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
  assert sorted(names) == ["features", "probabilities"]
  assert [list(s) for s in engine.get_tensor_profile_shape("features", 0)] == [[1, FEATURES], [MAX_BATCH, FEATURES],
                                                                               [MAX_BATCH, FEATURES]]


@pytest.mark.parametrize("cuda_binding", [pytest.param("cuda-python", marks=trt_engines), "pycuda"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_batch_size_from_one_plan_agrees_with_onnx_runtime(mlp_export, precision, cuda_binding):  # pylint: disable=redefined-outer-name
  from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner, pycuda_importable  # pylint: disable=g-import-not-at-top
  if cuda_binding == "pycuda" and not pycuda_importable():
    pytest.skip("pycuda is not installed (`pip install pycuda`; it builds against the driver)")
  base, signature, manifest = mlp_export
  path = _artifact_dir(base, manifest, f"trt_{precision.lower()}")
  onnx_dir = _artifact_dir(base, manifest, f"onnx_{precision.lower()}")
  plan_path = os.path.join(path, "model.plan")
  before = variant.file_sha256(plan_path)
  tolerance, min_agreement = AGREEMENT[precision]
  agree = []
  with open_plan_runner(plan_path, signature, cuda_binding) as runner:
    engine = runner.executor.engine
    for batch in range(1, MAX_BATCH + 1):
      feeds = {"features": _samples(batch, seed=100 + batch)}
      got = runner.run(feeds)["probabilities"]
      want = _onnx_outputs(onnx_dir, feeds)["probabilities"].astype("float32")
      assert got.shape == (batch, CLASSES) and got.dtype == np.float32
      assert np.abs(got - want).max() / np.abs(want).max() <= tolerance, (precision, batch)
      agree.extend(got.argmax(1) == want.argmax(1))
    assert runner.executor.engine is engine  # one engine served every size: nothing was rebuilt
  assert np.mean(agree) >= min_agreement, precision  # over all 136 samples
  assert variant.file_sha256(plan_path) == before


@trt_engines
def test_int8_engine_layers_run_in_int8(mlp_export):  # pylint: disable=redefined-outer-name
  from tftrt_keras.formats.tensorrt.build import LoadedEngine  # pylint: disable=g-import-not-at-top
  base, _, manifest = mlp_export
  with open(os.path.join(_artifact_dir(base, manifest, "trt_int8"), "model.plan"), "rb") as f:
    engine = LoadedEngine(f.read())
  layers = variant.layer_precisions(engine.layer_information())
  engine.close()
  assert layers.get("int8", 0) >= 1, layers  # the 16x64 MatMul; the 64x10 head stays FP32 (onnx_quantize)
  assert manifest["artifacts"]["trt_int8"]["layers_by_precision"] == layers
  assert "int8" not in manifest["artifacts"]["trt_fp32"]["layers_by_precision"]


@trt_engines
def test_timing_cache_reused_by_the_next_export_and_a_foreign_one_ignored(mlp_export):  # pylint: disable=redefined-outer-name
  base, _, first = mlp_export
  assert first["artifacts"]["trt_fp32"]["timing_cache"].startswith("new: ")
  assert first["artifacts"]["trt_fp16"]["timing_cache"].startswith("reused: ")  # the same export's fp32 build
  second = _export(str(base / "model"), str(base / "exports"), {"features": _samples(64, seed=2)},
                   precisions=("FP32",))
  assert second["artifacts"]["trt_fp32"]["timing_cache"].startswith("reused: ")
  cache_dir = base / "exports" / ".trt_timing_cache"
  (key_path,) = [p for p in cache_dir.iterdir() if p.suffix == ".json"]
  record = json.loads(key_path.read_text())
  key_path.write_text(json.dumps(dict(record, gpu_name="Some Other GPU")))
  third = _export(str(base / "model"), str(base / "exports"), {"features": _samples(64, seed=3)}, precisions=("FP32",))
  assert third["artifacts"]["trt_fp32"]["timing_cache"].startswith("ignored: it was made on Some Other GPU")
  assert third["artifacts"]["trt_fp32"]["status"] == "ok"


@trt_engines
def test_portable_plan_runs_and_a_foreign_model_json_is_refused(gpu_with_tensorrt, tmp_path):  # pylint: disable=redefined-outer-name
  """hardware_compatibility='ampere_plus' (on an Ampere or later GPU) and version_compatible=True reach TensorRT's
  builder (read back into model.json), the plan loads with its lean runtime allowed, and a plan whose model.json
  says another GPU or TensorRT is refused by the runner with the reason, before TensorRT sees it."""
  import shutil  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.base import BuildJob, RunnerUnavailable  # pylint: disable=g-import-not-at-top
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  ampere = int(gpu_with_tensorrt.gpus[0].compute_capability.split(".")[0]) >= 8  # ampere_plus builds there only
  signature = _mlp_saved_model(str(tmp_path / "model"))
  trt_options = {"hardware_compatibility": "ampere_plus" if ampere else "none", "version_compatible": True}
  options = ConversionOptions(formats=("onnx", "trt"), precisions=("FP32",), max_batch_size=MAX_BATCH,
                              verification_samples=VERIFICATION_SAMPLES, format_options={"trt": trt_options})
  manifest = export_saved_model(str(tmp_path / "model"), str(tmp_path / "exports"),
                                calibration_data={"features": _samples(128, seed=1)},
                                calibration_batch_size=MAX_BATCH, options=options)
  entry = manifest["artifacts"]["trt_fp32"]
  assert entry["status"] == "ok", entry
  path = os.path.normpath(os.path.join(tmp_path / "exports" / "manifests" / str(manifest["version"]), entry["path"]))
  metadata = json.loads(open(os.path.join(path, "model.json")).read())
  assert metadata["compatibility"]["hardware_compatibility_level"] == ("AMPERE_PLUS" if ampere else None)
  assert metadata["compatibility"]["version_compatible"] is True and "VERSION_COMPATIBLE" in metadata["builder"][
      "builder_flags"]
  job = BuildJob(root=str(tmp_path), version=1, native_dir=str(tmp_path), signature_key="serving_default",
                 signature=signature, options=options, calibration_batch_sizes=[MAX_BATCH])
  with trt_format.FORMAT.open_runner(path, job) as runner:
    assert runner.run({"features": _samples(3, seed=5)})["probabilities"].shape == (3, CLASSES)
  foreign = tmp_path / "foreign"
  shutil.copytree(path, foreign)
  claims = dict(metadata, tensorrt_version="9.9.9.9",
                compatibility=dict(metadata["compatibility"], version_compatible=False))
  (foreign / "model.json").write_text(json.dumps(claims))
  with pytest.raises(RunnerUnavailable, match="the plan was built with TensorRT 9.9.9.9 and this is TensorRT"):
    trt_format.FORMAT.open_runner(str(foreign), job)


@trt_engines
@pytest.mark.slow
def test_mobilenet_v2_engines(gpu_with_tensorrt, tmp_path):  # pylint: disable=unused-argument,redefined-outer-name
  """A real convolutional network: all three engines build, and agree with their ONNX variants."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner  # pylint: disable=g-import-not-at-top
  shape = (96, 96, 3)
  model = tf.keras.applications.MobileNetV2(input_shape=shape, weights=None, classes=CLASSES)
  tf.saved_model.save(model, str(tmp_path / "model"))
  from tftrt_keras.formats.signature import load_signature  # pylint: disable=g-import-not-at-top
  _, _, info = load_signature(str(tmp_path / "model"), "serving_default")
  signature = {"inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]}
  (input_name,), (output_name,) = [t["name"] for t in signature["inputs"]], [t["name"] for t in signature["outputs"]]
  manifest = _export(str(tmp_path / "model"), str(tmp_path / "exports"), {input_name: _samples(256, 1, shape)})
  feeds = {input_name: _samples(MAX_BATCH, 7, shape)}
  for precision in PRECISIONS:
    name = f"trt_{precision.lower()}"
    entry = manifest["artifacts"][name]
    # Built and usable; an untrained MobileNetV2 gives every input nearly the same scores, which verification
    # may say it cannot judge by (`unverified`).
    assert entry["status"] in ("ok", "unverified"), (name, entry)
    path = os.path.normpath(os.path.join(tmp_path / "exports" / "manifests" / str(manifest["version"]), entry["path"]))
    onnx_entry = manifest["artifacts"][f"onnx_{precision.lower()}"]
    onnx_dir = os.path.normpath(os.path.join(tmp_path / "exports" / "manifests" / str(manifest["version"]),
                                             onnx_entry["path"]))
    with open_plan_runner(os.path.join(path, "model.plan"), signature) as runner:
      got = runner.run(feeds)[output_name]
    want = list(_onnx_outputs(onnx_dir, feeds).values())[0].astype("float32")
    assert np.mean(got.argmax(1) == want.argmax(1)) >= AGREEMENT[precision][1] - 0.1, precision
  assert manifest["artifacts"]["trt_int8"]["layers_by_precision"].get("int8", 0) > 10


# --- TensorRT-RTX engines on a GPU that can run them ------------------------------------------------------------
# Building them needs no GPU and is tested on every machine (tests/test_trt_rtx_format.py); running them is here.

@pytest.fixture(scope="module")
def rtx_gpu():
  from tftrt_keras.formats.tensorrt import rtx  # pylint: disable=g-import-not-at-top
  status = trt_format.probe(edition="tensorrt_rtx")
  if not status.tensorrt_version:
    pytest.skip(f"TensorRT-RTX is not installed ({status.tensorrt_error})")
  runnable = [g for g in status.gpus if g.compute_capability in rtx.PORTABLE_TARGETS]
  if not runnable:
    pytest.skip(rtx.cannot_run_text(list(rtx.PORTABLE_TARGETS), status, " (TensorRT-RTX's portable default)"))
  return runnable[0]


@pytest.fixture(scope="module")
def rtx_export(rtx_gpu, tmp_path_factory):  # pylint: disable=unused-argument,redefined-outer-name
  base = tmp_path_factory.mktemp("trt_rtx_engines")
  signature = _mlp_saved_model(str(base / "model"))
  manifest = _export(str(base / "model"), str(base / "exports"), {"features": _samples(512, seed=1)},
                     formats=("onnx", "trt_rtx"))
  return base, signature, manifest


@trt_rtx_gpu
@pytest.mark.parametrize("precision", PRECISIONS)
def test_trt_rtx_engine_is_verified_and_serves_every_batch(rtx_export, rtx_gpu, precision):  # pylint: disable=redefined-outer-name
  """`ok` (deserialized, layers counted, verified against the normal export) and, through the cuda-python runner,
  every batch size agrees with the ONNX variant in ONNX Runtime."""
  from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner  # pylint: disable=g-import-not-at-top
  base, signature, manifest = rtx_export
  name = f"trt_rtx_{precision.lower()}"
  path = _artifact_dir(base, manifest, name)
  metadata = json.loads(open(os.path.join(path, "model.json")).read())
  assert metadata["checks"]["deserialize"] == (f"passed: the engine deserializes on {rtx_gpu.name} (compute "
                                               f"capability {rtx_gpu.compute_capability})")
  entry = manifest["artifacts"][name]
  assert entry["status"] == expected_verdict(precision), entry
  assert entry["verification"]["passed"] is (precision == "FP32"), entry
  if precision != "FP32":
    assert "too few verification samples to tell" in entry["reason"], entry
  if precision == "INT8":
    assert metadata["layers_by_precision"].get("int8", 0) >= 1, metadata["layers_by_precision"]
  onnx_dir = _artifact_dir(base, manifest, f"onnx_{precision.lower()}")
  tolerance, min_agreement = AGREEMENT[precision]
  agree = []
  with open_plan_runner(os.path.join(path, "model.plan"), signature, device=rtx_gpu.index,
                        edition="tensorrt_rtx") as runner:
    for batch in range(1, MAX_BATCH + 1):
      feeds = {"features": _samples(batch, seed=200 + batch)}
      got = runner.run(feeds)["probabilities"]
      want = _onnx_outputs(onnx_dir, feeds)["probabilities"].astype("float32")
      assert np.abs(got - want).max() / np.abs(want).max() <= tolerance, (precision, batch)
      agree.extend(got.argmax(1) == want.argmax(1))
  assert np.mean(agree) >= min_agreement, precision
