"""Running an ONNX variant in ONNX Runtime, fed and read by the signature's names."""

import json
import os

from tftrt_keras.formats.base import METADATA_FILE, Runner, thread_limit

MODEL_FILE = "model.onnx"
# Preferred first; ONNX Runtime takes the first that is present and falls back along the list.
_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def available_providers(prefer_tensorrt=False):
  """The execution providers this ONNX Runtime build has, best first (CPU always last).

  TensorRT's provider is left out unless asked for: it builds engines on first use, and verification must time
  ONNX Runtime itself.
  """
  import onnxruntime  # pylint: disable=g-import-not-at-top
  present = set(onnxruntime.get_available_providers())
  order = _PROVIDER_ORDER if prefer_tensorrt else _PROVIDER_ORDER[1:]
  return [p for p in order if p in present] or ["CPUExecutionProvider"]


def session_options():
  """SessionOptions for every ONNX Runtime session a format opens: quiet, and within the worker's thread bound."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3  # warnings about unused initializers etc. are noise in a worker log
  threads = thread_limit()
  if threads:
    options.intra_op_num_threads = options.inter_op_num_threads = threads
  return options


class OnnxRuntimeRunner(Runner):
  """One ONNX variant directory (`model.onnx` + `model.json`) in an ONNX Runtime session.

  Inputs are bound by the signature's names and cast to `model.json`'s dtypes; outputs come back by name.

  Args:
    path: the variant's version directory.
    providers: execution providers (default: CUDA where present, then CPU).
  """

  def __init__(self, path, providers=None):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import onnxruntime  # pylint: disable=g-import-not-at-top
    with open(os.path.join(path, METADATA_FILE), encoding="utf-8") as f:
      self.metadata = json.load(f)
    self._dtypes = {t["name"]: np.dtype(t["dtype"]) for t in self.metadata["inputs"]}
    self._output_names = [t["name"] for t in self.metadata["outputs"]]
    self._session = onnxruntime.InferenceSession(os.path.join(path, MODEL_FILE), sess_options=session_options(),
                                                 providers=providers or available_providers())

  @property
  def providers(self):
    return self._session.get_providers()

  def prepared_call(self, feeds):
    unknown = sorted(set(feeds) - set(self._dtypes))
    missing = sorted(set(self._dtypes) - set(feeds))
    if unknown or missing:
      raise ValueError(f"feeds must name exactly the inputs {sorted(self._dtypes)}; "
                       f"unknown: {unknown}, missing: {missing}")
    import numpy as np  # pylint: disable=g-import-not-at-top
    bound = {name: np.ascontiguousarray(value, dtype=self._dtypes[name]) for name, value in feeds.items()}
    session, names = self._session, self._output_names
    # session.run returns host arrays: the call has waited for the result.
    return lambda: dict(zip(names, session.run(names, bound)))

  def close(self):
    self._session = None
