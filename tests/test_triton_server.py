"""The Triton repository a real `fit` emits, loaded and queried by a real Triton server (2.51, from the
nvidia-pytriton wheel) on 127.0.0.1.

`model.fit` trains the main job's digits CNN (examples/train_keras.py) for two epochs with
`TrtExport(formats=("onnx",), triton_repository=...)`; each epoch's export builds, verifies and publishes
`onnx_fp32`, `onnx_fp16` and `onnx_int8`. The wheel's server has no onnxruntime backend, so for this test each
emitted ONNX model is served by the Python backend running ONNX Runtime on that version's own model.onnx, with
the emitted config.pbtxt unchanged but for one line (`platform: "onnxruntime_onnx"` -> `backend: "python"`).
Everything else the server checks is ours: names, types, dims, max_batch_size, dynamic batching, version policy,
the version directories.
"""

import difflib
import json
import os
import shutil

import numpy as np
import pytest

from tftrt_keras.serving import triton
from tests import triton_helpers

pytestmark = [pytest.mark.tf, pytest.mark.slow]

EPOCHS = 2  # two exports: the repository holds versions 1 and 2 of every model, the server loads 2
MAX_BATCH = 6
VALIDATION_BATCH = 4  # the captured batch size, which each model's dynamic batcher prefers
PREFIX = "digits"
VARIANTS = ("onnx_fp32", "onnx_fp16", "onnx_int8")
CONCURRENT_REQUESTS = 200
# Served outputs against ONNX Runtime on the same model.onnx, as (rtol, atol). The Python backend runs the
# model single-threaded on the batches the dynamic batcher forms, the reference on other batches; FP16 and INT8
# kernels may round a row differently with the batch it sits in.
SERVED_TOLERANCES = {"onnx_fp32": (1e-5, 1e-6), "onnx_fp16": (1e-4, 1e-6), "onnx_int8": (1e-4, 1e-6)}
# Served outputs against the normal SavedModel: verification's own criterion (max |served - normal| / max
# |normal|) at the ConversionOptions default for the variant's precision.
NATIVE_TOLERANCES = {"onnx_fp32": 1e-3, "onnx_fp16": 1e-2, "onnx_int8": 1e-1}

# Served by the Python backend: ONNX Runtime on model.onnx beside it. Requests of one dynamic batch arrive
# together in `execute` and run as one ONNX Runtime call, as the onnxruntime backend would batch them.
_MODEL_PY = '''
import json, os, sys
sys.path.insert(0, {site_packages!r})  # the stub's embedded Python does not see the environment's packages
import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:

  def initialize(self, args):
    directory = os.path.join(args["model_repository"], args["model_version"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    self.session = onnxruntime.InferenceSession(os.path.join(directory, "model.onnx"), options,
                                                providers=["CPUExecutionProvider"])
    config = json.loads(args["model_config"])
    self.inputs = [t["name"] for t in config["input"]]
    self.outputs = [t["name"] for t in config["output"]]

  def execute(self, requests):
    arrays = {{n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests] for n in self.inputs}}
    sizes = [len(a) for a in arrays[self.inputs[0]]]
    results = self.session.run(self.outputs, {{n: np.concatenate(a) for n, a in arrays.items()}})
    responses, start = [], 0
    for size in sizes:
      responses.append(pb_utils.InferenceResponse(
          [pb_utils.Tensor(n, np.ascontiguousarray(r[start:start + size])) for n, r in zip(self.outputs, results)]))
      start += size
    return responses
'''

# The gRPC side (tritonclient lives in the Triton environment): every batch size, one too many, and bursts of
# concurrent requests (at most three, until the dynamic batcher has combined some). Prints JSON.
_GRPC_CLIENT = r'''
import json, sys, threading, time
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, model, max_batch, burst, inputs_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
input_name, output_names = sys.argv[6], json.loads(sys.argv[7])
x = np.load(inputs_path)
client = grpcclient.InferenceServerClient(url)
result = {"ready": client.is_model_ready(model), "outputs": {}, "refused": None}

def request(batch):
  tensor = grpcclient.InferInput(input_name, list(batch.shape), "FP32")
  tensor.set_data_from_numpy(batch)
  return {"inputs": [tensor], "outputs": [grpcclient.InferRequestedOutput(n) for n in output_names]}

for size in range(1, max_batch + 1):
  answer = client.infer(model, **request(x[:size]), client_timeout=30)
  result["outputs"][size] = {n: answer.as_numpy(n).tolist() for n in output_names}
try:
  client.infer(model, **request(x[:max_batch + 1]), client_timeout=30)
except InferenceServerException as err:
  result["refused"] = err.message()

def burst_once():
  """Sends `burst` one-row requests without waiting; returns what came back and Triton's counters around it."""
  requests = [request(x[i % len(x):i % len(x) + 1]) for i in range(burst)]  # built first: the sends go out fast
  done, errors, lock = [], [], threading.Lock()
  all_done = threading.Event()
  def callback(index, answer, error):
    with lock:
      if error is not None:
        errors.append(str(error))
      else:
        done.append((index, {n: answer.as_numpy(n)[0].tolist() for n in output_names}))
      if len(done) + len(errors) == burst:
        all_done.set()
  counters = lambda: {k: int(v) for k, v in client.get_inference_statistics(model, as_json=True)  # noqa: E731
                      ["model_stats"][0].items() if k in ("inference_count", "execution_count")}
  before, started = counters(), time.monotonic()
  for i, kwargs in enumerate(requests):
    client.async_infer(model, **kwargs, client_timeout=60,
                       callback=lambda result, error, i=i: callback(i, result, error))
  all_done.wait(timeout=120)
  seconds = round(time.monotonic() - started, 3)
  # Triton counts a request in its statistics after sending the response: the last few can still be uncounted
  # when their callbacks have run (198 of 200 on a busy machine). Wait for the counters to settle.
  settle = time.monotonic() + 10
  after = counters()
  while after["inference_count"] - before["inference_count"] < len(done) and time.monotonic() < settle:
    time.sleep(0.05)
    after = counters()
  return {"answered": len(done), "errors": errors[:5], "seconds": seconds, "outputs": dict(done),
          "inferences": after["inference_count"] - before["inference_count"],
          "executions": after["execution_count"] - before["execution_count"]}

# Whether queued requests meet in one execution depends on timing: on a busy machine the server can answer each
# request before the next arrives. Up to three bursts; without dynamic batching none of them would ever combine.
result["bursts"] = []
for _ in range(3):
  result["bursts"].append(burst_once())
  if result["bursts"][-1]["executions"] < burst:
    break
client.close()
print(json.dumps(result))
'''


def _model(variant):
  return triton.triton_model_name(PREFIX, variant)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """A real `fit` of the main job's digits CNN with `TrtExport(formats=("onnx",), triton_repository=...)`:
  two exports, each with its ONNX variants built, verified and published by the export worker."""
  reason = triton_helpers.triton_venv_skip_reason()
  if reason:
    pytest.skip(reason)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from examples.digits import load_digits  # pylint: disable=g-import-not-at-top
  from examples.train_keras import build_model  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("triton_server")
  root, repository = base / "export", base / "repository"
  keras = tf.keras
  keras.utils.set_random_seed(0)
  (x, y), (x_val, y_val) = load_digits(0.45, 0)  # the main job's split: 808 validation digits
  model = build_model(keras)
  callback = tftrt_keras.TrtExport(str(root), formats=("onnx",), triton_repository=str(repository),
                                   triton_model_name=PREFIX, max_batch_size=MAX_BATCH, calibration_batches=16,
                                   blocking=True, verbose=0, seed=0)
  model.fit(x, y, validation_data=(x_val, y_val), validation_batch_size=VALIDATION_BATCH, epochs=EPOCHS,
            batch_size=32, callbacks=[callback], verbose=0)
  manifests = {}
  for path in callback.manifest_paths:
    with open(path) as f:
      manifest = json.load(f)
    manifests[manifest["version"]] = manifest
  versions = sorted(ExportLayout(str(root)).versions())
  assert sorted(manifests) == versions == list(range(1, EPOCHS + 1)), (sorted(manifests), versions)
  for version, manifest in manifests.items():
    for variant in VARIANTS:
      entry = manifest["artifacts"][variant]
      assert entry["status"] == "ok" and entry["verification"]["passed"], (version, variant, entry)
  latest = versions[-1]
  with open(root / "onnx_fp32" / str(latest) / "model.json") as f:
    metadata = json.load(f)
  return {"root": root, "repository": repository, "base": base, "manifests": manifests, "versions": versions,
          "latest": latest, "metadata": metadata, "x": x_val, "native": str(root / str(latest))}


def _ok_onnx_variants(manifest):
  return sorted(n for n, e in manifest["artifacts"].items()
                if n.rpartition("_")[0] == "onnx" and e["status"] == "ok")


def test_the_repository_holds_one_model_per_ok_onnx_variant_with_the_export_versions(export):
  repository, latest = export["repository"], export["latest"]
  ok = _ok_onnx_variants(export["manifests"][latest])
  assert ok == sorted(VARIANTS)
  assert sorted(os.listdir(repository)) == sorted(_model(v) for v in ok)
  for variant in ok:
    model_dir = repository / _model(variant)
    assert sorted(int(n) for n in os.listdir(model_dir) if n.isdigit()) == export["versions"]
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp-")]
    for version in export["versions"]:
      # The served file is the verified variant itself (a hard link, or a copy across filesystems).
      served = model_dir / str(version) / "model.onnx"
      built = export["root"] / variant / str(version) / "model.onnx"
      assert served.read_bytes() == built.read_bytes()
      assert (model_dir / str(version) / "model.json").read_text() == (built.parent / "model.json").read_text()


def test_each_manifest_lists_its_exports_models_in_its_triton_record(export):
  repository = export["repository"]
  for version, manifest in export["manifests"].items():
    record = manifest["serving"]["triton"]
    assert os.path.realpath(record["repository"]) == os.path.realpath(repository)
    assert record["model_name_prefix"] == PREFIX
    assert record["left_out"] == {}
    assert record["models"] == {
        _model(v): {"variant": v, "version": version, "path": str(repository / _model(v) / str(version)),
                    "status": "ok", "platform": "onnxruntime_onnx", "max_batch_size": MAX_BATCH}
        for v in _ok_onnx_variants(manifest)}


@pytest.fixture(scope="module")
def served_repository(export):
  """The emitted repository with each ONNX model switched to the Python backend running ONNX Runtime."""
  served = export["base"] / "served_repository"
  shutil.copytree(export["repository"], served)
  site_packages = triton_helpers.site_packages()
  for name in os.listdir(served):
    config = served / name / "config.pbtxt"
    text = config.read_text()
    config.write_text(text.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    for version in (v for v in os.listdir(served / name) if v.isdigit()):
      (served / name / version / "model.py").write_text(_MODEL_PY.format(site_packages=site_packages))
  return served


@pytest.fixture(scope="module")
def server(served_repository, export):
  instance = triton_helpers.TritonServer(served_repository, export["base"])
  try:
    instance.start()
  except (FileNotFoundError, RuntimeError) as err:
    # Only the server not starting is a skip; a model it refuses is a failure (below).
    pytest.skip(f"the nvidia-pytriton tritonserver cannot run here: {err}")
  print(f"tritonserver live in {instance.start_seconds:.2f} s")
  try:
    states = instance.model_states()
    if states != {_model(v): ("READY", "") for v in VARIANTS}:
      pytest.fail(f"Triton did not load the repository: {states}\n{instance.log_tail()}")
    yield instance
  finally:
    instance.stop()
    assert instance.process.poll() is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_served_config_differs_from_the_emitted_one_only_in_the_backend_line(export, served_repository, variant):
  emitted = (export["repository"] / _model(variant) / "config.pbtxt").read_text().splitlines()
  served = (served_repository / _model(variant) / "config.pbtxt").read_text().splitlines()
  changed = [line for line in difflib.unified_diff(emitted, served, lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
  assert changed == ['-platform: "onnxruntime_onnx"', '+backend: "python"']


def test_server_loads_every_model_at_the_latest_export_with_our_config(server, export):
  status, index = server.http("POST", "/v2/repository/index")
  assert status == 200
  assert {(m["name"], m.get("version"), m.get("state")) for m in index} == {
      (_model(v), str(export["latest"]), "READY") for v in VARIANTS}
  metadata = export["metadata"]
  for variant in VARIANTS:
    status, config = server.http("GET", f"/v2/models/{_model(variant)}/config")
    assert status == 200, config
    assert config["max_batch_size"] == MAX_BATCH
    for key, tensors in (("input", metadata["inputs"]), ("output", metadata["outputs"])):
      assert [(t["name"], t["data_type"], t["dims"]) for t in config[key]] == [
          (t["name"], "TYPE_FP32", [int(d) for d in t["shape"][1:]]) for t in tensors]
    assert config["dynamic_batching"]["preferred_batch_size"] == [VALIDATION_BATCH]
    assert config["version_policy"] == {"latest": {"num_versions": 1}}


def _names(export):
  metadata = export["metadata"]
  assert len(metadata["inputs"]) == 1, metadata
  return metadata["inputs"][0]["name"], [t["name"] for t in metadata["outputs"]]


def _reference_run(export, variant, x):
  """ONNX Runtime on the model.onnx the server serves (the latest version of the variant)."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  path = export["repository"] / _model(variant) / str(export["latest"]) / "model.onnx"
  session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  input_name, output_names = _names(export)
  return dict(zip(output_names, session.run(output_names, {input_name: x})))


def _native_run(export, x):
  """The normal SavedModel of the latest export (what the user would serve without this library)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(export["native"])
  outputs = loaded.signatures["serving_default"](**{_names(export)[0]: tf.constant(x)})
  return {n: t.numpy() for n, t in outputs.items()}


def _assert_served(variant, served, expected):
  rtol, atol = SERVED_TOLERANCES[variant]
  assert set(served) == set(expected)
  for name in expected:
    np.testing.assert_allclose(served[name], expected[name], rtol=rtol, atol=atol, err_msg=f"{variant} {name}")


def _http_infer(server, export, variant, x):
  body = {"inputs": [{"name": _names(export)[0], "shape": list(x.shape), "datatype": "FP32",
                      "data": x.ravel().tolist()}]}
  return server.http("POST", f"/v2/models/{_model(variant)}/infer", body)


@pytest.mark.parametrize("variant", VARIANTS)
def test_http_every_batch_size_up_to_the_max_equals_the_onnx_variant(server, export, variant):
  x = export["x"][:MAX_BATCH + 1]
  native = _native_run(export, x)
  for size in range(1, MAX_BATCH + 1):
    status, answer = _http_infer(server, export, variant, x[:size])
    assert status == 200, answer
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in answer["outputs"]}
    _assert_served(variant, outputs, _reference_run(export, variant, x[:size]))
    for name, value in outputs.items():
      reference = native[name][:size]
      error = np.max(np.abs(value - reference)) / np.max(np.abs(reference))
      assert error <= NATIVE_TOLERANCES[variant], (variant, name, size, error)
  status, answer = _http_infer(server, export, variant, x)
  assert status == 400
  assert f"batch-size must be <= {MAX_BATCH}" in answer["error"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_grpc_batches_and_a_burst_of_concurrent_requests(server, export, tmp_path, variant):
  model = _model(variant)
  x = export["x"][:32]
  np.save(tmp_path / "x.npy", x)
  input_name, output_names = _names(export)
  _, before = server.http("GET", f"/v2/models/{model}/stats")
  result = triton_helpers.run_triton_python(_GRPC_CLIENT, f"127.0.0.1:{server.grpc_port}", model, MAX_BATCH,
                                            CONCURRENT_REQUESTS, tmp_path / "x.npy", input_name,
                                            json.dumps(output_names))
  _, after = server.http("GET", f"/v2/models/{model}/stats")
  assert result["ready"] is True
  for size in range(1, MAX_BATCH + 1):
    served = {n: np.array(v, np.float32) for n, v in result["outputs"][str(size)].items()}
    _assert_served(variant, served, _reference_run(export, variant, x[:size]))
  assert f"batch-size must be <= {MAX_BATCH}" in result["refused"]
  bursts = result["bursts"]
  expected = _reference_run(export, variant, x)
  for burst in bursts:
    assert burst["errors"] == [] and burst["answered"] == CONCURRENT_REQUESTS, burst
    assert burst["inferences"] == CONCURRENT_REQUESTS, burst["inferences"]
    for index, outputs in burst["outputs"].items():
      row = int(index) % len(x)
      _assert_served(variant, {n: np.array(v, np.float32) for n, v in outputs.items()},
                     {n: e[row] for n, e in expected.items()})
    print(f"{variant}: {CONCURRENT_REQUESTS} concurrent requests in {burst['seconds']} s; {burst['inferences']} "
          f"inferences in {burst['executions']} executions")
  stats = lambda s: s["model_stats"][0]  # noqa: E731
  inferences = stats(after)["inference_count"] - stats(before)["inference_count"]
  assert inferences == sum(range(1, MAX_BATCH + 1)) + CONCURRENT_REQUESTS * len(bursts)
  # the dynamic batcher put requests together
  assert bursts[-1]["executions"] < CONCURRENT_REQUESTS, [(b["inferences"], b["executions"]) for b in bursts]
