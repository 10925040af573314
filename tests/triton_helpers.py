"""The Triton environment (.venv/triton, see scripts/make_triton_env.sh) seen from the tests, and a real
tritonserver started and stopped by them.

The Triton pieces (the server from the nvidia-pytriton wheel, tritonclient and its protobuf) cannot live in a
TensorFlow line's environment, so everything that needs them runs as a child process of .venv/triton.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRITON_VENV = os.environ.get("TFTRT_TRITON_VENV", os.path.join(ROOT, ".venv", "triton"))
TRITON_PYTHON = os.path.join(TRITON_VENV, "bin", "python")
READY_TIMEOUT_SECONDS = 60.0

_PARSE_SCRIPT = r"""
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
results = {}
for path in sys.argv[1:]:
  with open(path) as f:
    config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
  parsed = json_format.MessageToDict(config, preserving_proto_field_name=True)
  # Presence is lost in the dict for empty sub-messages of proto3; say explicitly which tensors have a reshape.
  parsed["_has_reshape"] = {t.name: t.HasField("reshape") for t in list(config.input) + list(config.output)}
  results[path] = parsed
print(json.dumps(results))
"""


def triton_venv_skip_reason():
  """Why the Triton environment cannot be used here, or None."""
  if not os.path.isfile(TRITON_PYTHON):
    return (f"{TRITON_VENV} does not exist: run scripts/make_triton_env.sh (nvidia-pytriton, tritonclient, "
            "onnxruntime in their own environment)")
  return None


def parse_configs(paths):
  """{path: ModelConfig as a dict} for config.pbtxt files, parsed by Triton's own protobuf definitions
  (`tritonclient.grpc.model_config_pb2`) in a child process of the Triton environment; a parse error fails."""
  result = subprocess.run([TRITON_PYTHON, "-c", _PARSE_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, check=False)
  if result.returncode:
    raise AssertionError(f"Triton's protobuf refused the config:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout)


def run_triton_python(script, *args, timeout=300):
  """Runs a Python script in the Triton environment; returns its stdout parsed as JSON (stderr on failure)."""
  result = subprocess.run([TRITON_PYTHON, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
  if result.returncode:
    raise AssertionError(f"Triton client script failed ({result.returncode}):\n{result.stderr[-4000:]}")
  return json.loads(result.stdout)


def site_packages():
  found = glob.glob(os.path.join(TRITON_VENV, "lib", "python3*", "site-packages"))
  if not found:
    raise FileNotFoundError(f"no site-packages in {TRITON_VENV}")
  return found[0]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class TritonServer:
  """A real `tritonserver` from the nvidia-pytriton wheel on free 127.0.0.1 ports, with its Python backend.

  The wheel ships the Python backend stubs per Python version beside the backend, not in it; a backends
  directory of our own gets the backend and the stub for the Python that the stub links (the system 3.11), so
  the installed wheel is never modified.
  """

  def __init__(self, repository, work_dir):
    self.repository = str(repository)
    self.work_dir = str(work_dir)
    self.process = None
    self.log_path = os.path.join(self.work_dir, "tritonserver.log")
    self.http_port = self.grpc_port = None
    self.start_seconds = None

  def _wheel(self):
    """The wheel's pieces; FileNotFoundError when one is missing or the stub's libraries (the system libpython of
    the environment's Python version) are not installed."""
    packages = site_packages()
    python_version = os.path.basename(os.path.dirname(packages))[len("python"):]  # lib/python3.11/site-packages
    tritonserver = os.path.join(packages, "pytriton", "tritonserver")
    libs = os.path.join(packages, "nvidia_pytriton.libs")
    binary = os.path.join(tritonserver, "bin", "tritonserver")
    stub = os.path.join(tritonserver, "python_backend_stubs", python_version, "triton_python_backend_stub")
    for path in (binary, stub, libs):
      if not os.path.exists(path):
        raise FileNotFoundError(f"the nvidia-pytriton wheel has no {path}")
    env = dict(os.environ, LD_LIBRARY_PATH=libs)
    for path in (binary, stub):
      ldd = subprocess.run(["ldd", path], capture_output=True, text=True, env=env, timeout=30, check=False)
      missing = [line.strip() for line in ldd.stdout.splitlines() if "not found" in line]
      if ldd.returncode or missing:
        raise FileNotFoundError(f"{path} cannot load its libraries: {missing or ldd.stderr.strip()} (the Python "
                                f"backend stub needs the system's libpython{python_version}.so)")
    return tritonserver, libs, binary, stub

  def start(self):
    """Starts the server and waits (bounded) until it is live. Raises RuntimeError with the log's tail when it
    exits or does not come up; the process is killed then.

    A model that fails to load keeps the server up (`--exit-on-error=false`): that is the test's finding, to be
    asserted on with `model_states`, not a reason to skip.
    """
    tritonserver, libs, binary, stub = self._wheel()
    backends = os.path.join(self.work_dir, "backends")
    shutil.rmtree(backends, ignore_errors=True)
    shutil.copytree(os.path.join(tritonserver, "backends"), backends)
    shutil.copy2(stub, os.path.join(backends, "python", "triton_python_backend_stub"))
    self.http_port, self.grpc_port = _free_port(), _free_port()
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(p for p in (libs, os.environ.get("LD_LIBRARY_PATH")) if p))
    command = [binary, f"--model-repository={self.repository}", f"--backend-directory={backends}",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--grpc-address=127.0.0.1",
               f"--grpc-port={self.grpc_port}", "--allow-metrics=false", "--exit-timeout-secs=5",
               "--exit-on-error=false"]
    started = time.monotonic()
    with open(self.log_path, "w") as log:
      self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
      while time.monotonic() - started < READY_TIMEOUT_SECONDS:
        if self.process.poll() is not None:
          raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
        if self.http("GET", "/v2/health/live")[0] == 200:
          self.start_seconds = time.monotonic() - started
          return self
        time.sleep(0.25)
      raise RuntimeError(f"tritonserver not ready after {READY_TIMEOUT_SECONDS:.0f} s:\n{self.log_tail()}")
    except BaseException:
      self.stop()
      raise

  def stop(self):
    """Kills the server's process group (the server and its Python backend stubs)."""
    if self.process is None:
      return
    if self.process.poll() is None:
      try:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=15)
      except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
      os.killpg(self.process.pid, signal.SIGKILL)  # stubs that outlived the server
    except ProcessLookupError:
      pass
    try:
      self.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
      pass

  def model_states(self):
    """{model name: (state, reason)} from the repository index."""
    status, index = self.http("POST", "/v2/repository/index")
    if status != 200:
      raise AssertionError(f"repository index: {status} {index}")
    return {m["name"]: (m.get("state"), m.get("reason", "")) for m in index}

  def log_tail(self, chars=4000):
    try:
      with open(self.log_path) as f:
        return f.read()[-chars:]
    except OSError:
      return "(no log)"

  def http(self, method, path, body=None, timeout=30):
    """(status, parsed JSON body or text) of one KServe v2 HTTP call; (None, error) when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
      with urllib.request.urlopen(request, timeout=timeout) as response:
        status, payload = response.status, response.read()
    except urllib.error.HTTPError as err:
      status, payload = err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
      return None, str(err)
    try:
      return status, json.loads(payload) if payload else None
    except ValueError:
      return status, payload.decode(errors="replace")
