"""The repository an export writes, loaded and queried by a real Triton server (2.51, from the nvidia-pytriton
wheel) on 127.0.0.1.

The wheel's server has no onnxruntime backend, so for this test each ONNX model is served by the Python backend
running ONNX Runtime on the model's own model.onnx, with the emitted config.pbtxt unchanged but for one line
(`platform: "onnxruntime_onnx"` -> `backend: "python"`). Everything else the server checks is ours: names, types,
dims, max_batch_size, dynamic batching, version policy, the version directories.
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

MAX_BATCH = 6
MODEL = "served_onnx_fp32"
CONCURRENT_REQUESTS = 200

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

# The gRPC side (tritonclient lives in the Triton environment): every batch size, one too many, and a bounded
# burst of concurrent requests. Prints JSON.
_GRPC_CLIENT = r'''
import json, sys, threading, time
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

url, model, max_batch, burst, inputs_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
x = np.load(inputs_path)
client = grpcclient.InferenceServerClient(url)
result = {"ready": client.is_model_ready(model), "outputs": {}, "refused": None}

def request(batch):
  tensor = grpcclient.InferInput("x", list(batch.shape), "FP32")
  tensor.set_data_from_numpy(batch)
  return {"inputs": [tensor], "outputs": [grpcclient.InferRequestedOutput(n) for n in ("logits", "probabilities")]}

for size in range(1, max_batch + 1):
  answer = client.infer(model, **request(x[:size]), client_timeout=30)
  result["outputs"][size] = {n: answer.as_numpy(n).tolist() for n in ("logits", "probabilities")}
try:
  client.infer(model, **request(x[:max_batch + 1]), client_timeout=30)
except InferenceServerException as err:
  result["refused"] = err.message()

done, errors, lock = [], [], threading.Lock()
all_done = threading.Event()
def callback(index, answer, error):
  with lock:
    if error is not None:
      errors.append(str(error))
    else:
      done.append((index, answer.as_numpy("logits")[0].tolist()))
    if len(done) + len(errors) == burst:
      all_done.set()

started = time.monotonic()
for i in range(burst):
  client.async_infer(model, **request(x[i % len(x):i % len(x) + 1]), client_timeout=60,
                     callback=lambda result, error, i=i: callback(i, result, error))
all_done.wait(timeout=120)
result["burst"] = {"answered": len(done), "errors": errors[:5], "seconds": round(time.monotonic() - started, 3),
                   "logits": dict(done)}
client.close()
print(json.dumps(result))
'''


def _reference_run(onnx_path, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
  logits, probabilities = session.run(["logits", "probabilities"], {"x": x})
  return {"logits": logits, "probabilities": probabilities}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  """A real export's Triton repository: prepare_export on a real SavedModel, its ONNX FP32 variant (written by
  the test until the ONNX format builds it), publish_export."""
  reason = triton_helpers.triton_venv_skip_reason()
  if reason:
    pytest.skip(reason)
  from tftrt_keras import pipeline  # pylint: disable=g-import-not-at-top
  from tftrt_keras.conversion_options import ConversionOptions  # pylint: disable=g-import-not-at-top
  from tests import onnx_variant_files, saved_models  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("triton_server")
  options = ConversionOptions(formats=("onnx",), precisions=("FP32",), max_batch_size=MAX_BATCH,
                              triton_repository=str(base / "repository"), triton_model_name="served")
  references = {}

  def write_native(directory):
    references["tf"] = saved_models.classifier(directory, seed=3)

  request = pipeline.prepare_export(str(base / "export"), 1, {"kind": "test"}, options, write_native=write_native,
                                    batches=[saved_models.samples(2, seed=s) for s in range(4)])
  run = pipeline.ExportRun(request)
  path = run.layout.path("onnx_fp32", 1)
  onnx_variant_files.classifier_variant(run.job.native_dir, path)
  run.record("onnx_fp32", "ok", path)
  record = triton.publish_export(run)
  run.save()
  assert set(record["models"]) == {MODEL}, record
  return {"repository": base / "repository", "onnx": os.path.join(path, "model.onnx"), "tf": references["tf"],
          "base": base}


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
  print(f"tritonserver live, models loaded, in {instance.start_seconds:.2f} s")
  try:
    states = instance.model_states()
    if states != {MODEL: ("READY", "")}:
      pytest.fail(f"Triton did not load the repository: {states}\n{instance.log_tail()}")
    yield instance
  finally:
    instance.stop()
    assert instance.process.poll() is not None


def test_served_config_differs_from_the_emitted_one_only_in_the_backend_line(export, served_repository):
  emitted = (export["repository"] / MODEL / "config.pbtxt").read_text().splitlines()
  served = (served_repository / MODEL / "config.pbtxt").read_text().splitlines()
  changed = [line for line in difflib.unified_diff(emitted, served, lineterm="", n=0)
             if line[:1] in "+-" and not line.startswith(("+++", "---"))]
  assert changed == ['-platform: "onnxruntime_onnx"', '+backend: "python"']


def test_server_loads_the_model_with_our_config(server):
  status, index = server.http("POST", "/v2/repository/index")
  assert status == 200
  assert {(m["name"], m.get("version"), m.get("state")) for m in index} == {(MODEL, "1", "READY")}
  status, config = server.http("GET", f"/v2/models/{MODEL}/config")
  assert status == 200, config
  assert config["max_batch_size"] == MAX_BATCH
  assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("x", "TYPE_FP32", [4])]
  assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
      ("logits", "TYPE_FP32", [3]), ("probabilities", "TYPE_FP32", [3])]
  assert config["dynamic_batching"]["preferred_batch_size"] == [2]
  assert config["version_policy"] == {"latest": {"num_versions": 1}}


def _http_infer(server, x):
  body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
  return server.http("POST", f"/v2/models/{MODEL}/infer", body)


def test_http_every_batch_size_up_to_the_max_equals_the_onnx_variant(server, export):
  x = np.random.default_rng(7).normal(size=(MAX_BATCH + 1, 4)).astype(np.float32)
  for size in range(1, MAX_BATCH + 1):
    status, answer = _http_infer(server, x[:size])
    assert status == 200, answer
    outputs = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in answer["outputs"]}
    expected = _reference_run(export["onnx"], x[:size])
    for name in ("logits", "probabilities"):
      np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(outputs[name], export["tf"](x[:size])[name], rtol=1e-4, atol=1e-5)
  status, answer = _http_infer(server, x)
  assert status == 400
  assert f"batch-size must be <= {MAX_BATCH}" in answer["error"]


def test_grpc_batches_and_a_burst_of_concurrent_requests(server, export, tmp_path):
  x = np.random.default_rng(11).normal(size=(32, 4)).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  _, before = server.http("GET", f"/v2/models/{MODEL}/stats")
  result = triton_helpers.run_triton_python(_GRPC_CLIENT, f"127.0.0.1:{server.grpc_port}", MODEL, MAX_BATCH,
                                            CONCURRENT_REQUESTS, tmp_path / "x.npy")
  _, after = server.http("GET", f"/v2/models/{MODEL}/stats")
  assert result["ready"] is True
  for size in range(1, MAX_BATCH + 1):
    expected = _reference_run(export["onnx"], x[:size])
    for name in ("logits", "probabilities"):
      np.testing.assert_allclose(np.array(result["outputs"][str(size)][name]), expected[name], rtol=1e-5, atol=1e-6)
  assert f"batch-size must be <= {MAX_BATCH}" in result["refused"]
  burst = result["burst"]
  assert burst["errors"] == [] and burst["answered"] == CONCURRENT_REQUESTS, burst
  expected = _reference_run(export["onnx"], x)["logits"]
  for index, logits in burst["logits"].items():
    np.testing.assert_allclose(logits, expected[int(index) % len(x)], rtol=1e-5, atol=1e-6)
  stats = lambda s: s["model_stats"][0]  # noqa: E731
  inferences = stats(after)["inference_count"] - stats(before)["inference_count"]
  executions = stats(after)["execution_count"] - stats(before)["execution_count"]
  print(f"{CONCURRENT_REQUESTS} concurrent requests in {burst['seconds']} s; {inferences} inferences in "
        f"{executions} executions")
  assert inferences == sum(range(1, MAX_BATCH + 1)) + CONCURRENT_REQUESTS
  assert executions < MAX_BATCH + CONCURRENT_REQUESTS  # the dynamic batcher put requests together
