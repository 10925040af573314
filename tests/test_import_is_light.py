"""`import tftrt_keras` pulls in no TensorRT, TF-TRT, ONNX, ONNX Runtime or CUDA module (they load on first
conversion only), and neither does loading every format's description.

Checked in a fresh interpreter: this test process has long imported TensorFlow, and `import tensorflow` itself
registers `tf.experimental.tensorrt`, so only a process that has not imported TensorFlow can tell.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ("tensorflow.python.compiler.tensorrt", "tensorflow.compiler.tf2tensorrt", "tensorrt", "tensorrt_rtx", "onnx",
         "onnxruntime", "tf2onnx", "onnxconverter_common", "cuda", "pycuda")

_PROBE = """
import json, sys
{imports}
heavy = {heavy!r}
print(json.dumps({{
    "trt": sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)),
    "tensorflow": "tensorflow" in sys.modules,
}}))
"""


def _modules_after(imports):
  result = subprocess.run([sys.executable, "-c", _PROBE.format(imports=imports, heavy=HEAVY)],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_tftrt_keras_loads_no_tensorrt_and_no_tensorflow():
  loaded = _modules_after("import tftrt_keras\nassert tftrt_keras.__version__")
  assert loaded == {"trt": [], "tensorflow": False}


def test_the_export_machinery_loads_no_tensorrt_at_import():
  """The modules the trainer imports to schedule exports, and the one TF-TRT module itself, import lazily."""
  loaded = _modules_after("import tftrt_keras.pipeline.run, tftrt_keras.offline.export, tftrt_keras.pipeline.worker, "
                          "tftrt_keras.pipeline.scheduler, tftrt_keras.formats.frozen, tftrt_keras.formats.tftrt.convert, "
                          "tftrt_keras.preflight\nfrom tftrt_keras import check_tftrt, ConversionOptions")
  assert loaded == {"trt": [], "tensorflow": False}


def test_every_format_and_the_variant_list_load_nothing_heavy():
  """Resolving formats="auto" and the variants of every format happens in the trainer at each export."""
  loaded = _modules_after("from tftrt_keras import formats\nfrom tftrt_keras.options import artifact_names\n"
                          "from tftrt_keras.options import ConversionOptions\n"
                          "[formats.load_format(f) for f in formats.FORMATS]\n"
                          "assert len(artifact_names(ConversionOptions(formats=formats.FORMATS))) == 15\n"
                          "from tftrt_keras.serving import triton")
  assert loaded == {"trt": [], "tensorflow": False}
