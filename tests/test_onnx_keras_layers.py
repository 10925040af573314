"""Every Keras activation and normalization layer through our ONNX conversion, against Keras itself.

One tiny model per layer (a (4, 6) input; weights drawn away from their initial values so that a wrong
scale or shift shows), one conversion, and ONNX Runtime's output compared with the model's own. The list is
read from the Keras flavour installed (activations differ between Keras 2.15, 3.6 and 3.15), so it runs on
every TF line with what that line's Keras has. Layers whose op no tool here converts are asserted to fail
naming the op and tf2onnx (the known limits in `tftrt_keras/formats/onnx_tf_ops.py`).
"""

import inspect

import numpy as np
import pytest

from tests import keras_models
from tftrt_keras.formats.onnx import format as onnx_format

pytestmark = pytest.mark.tf

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access
needs_onnx = pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable here: {_MISSING}")
# Not activations: the registry's own helpers.
_NOT_ACTIVATIONS = {"get", "serialize", "deserialize"}
# Arguments an activation requires beyond x, chosen inside the input's range so both branches are taken.
_REQUIRED_ARGS = {"threshold": {"threshold": 0.5, "default_value": -1.0}}
NORMALIZATIONS = ("BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
                  "RMSNormalization", "Normalization", "SpectralNormalization")
ACTIVATION_LAYERS = ("ReLU", "ELU", "LeakyReLU", "PReLU", "Softmax", "ThresholdedReLU")
FEATURES = 6


def _activation_names(keras):
  return sorted(name for name, value in vars(keras.activations).items()
                if inspect.isfunction(value) and not name.startswith("_") and name not in _NOT_ACTIVATIONS)


def _cases():
  cases = []
  for flavor in keras_models.flavors():
    keras = keras_models.keras_for(flavor)
    cases += [(flavor, f"activation:{name}") for name in _activation_names(keras)]
    cases += [(flavor, name) for name in ACTIVATION_LAYERS + NORMALIZATIONS if hasattr(keras.layers, name)]
  return cases


def _params():
  """`_cases()` as pytest params; a layer that cannot even be built in this flavour is skipped, said why."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf_keras' SpectralNormalization.build makes `tf.keras.layers.InputSpec`, which is Keras 3's on TF 2.16+
  # (unless TF_USE_LEGACY_KERAS), and tf_keras then refuses it: a tf_keras bug before any conversion.
  broken = {("tf_keras", "SpectralNormalization")} if not tf.keras.__name__.startswith("tf_keras") else set()
  return [pytest.param(*case, marks=pytest.mark.skip(reason="tf_keras' SpectralNormalization cannot be built "
                                                            "beside Keras 3 (it makes a Keras 3 InputSpec)"))
          if case in broken else case for case in _cases()]


def _layer(keras, case, rng):
  """The layer `case` names, built and ready for inference (adapted, or weights moved off their init)."""
  layers = keras.layers
  if case.startswith("activation:"):
    name = case.split(":", 1)[1]
    function = getattr(keras.activations, name)
    extra = _REQUIRED_ARGS.get(name, {})
    return layers.Activation((lambda x: function(x, **extra)) if extra else function)
  if case == "Normalization":
    layer = layers.Normalization()
    layer.adapt(rng.normal(2.0, 3.0, size=(32, 4, FEATURES)).astype("float32"))
    return layer
  if case == "SpectralNormalization":
    return layers.SpectralNormalization(layers.Dense(5))
  if case == "GroupNormalization":
    return layers.GroupNormalization(groups=2)
  return getattr(layers, case)()


def _model(keras, case):
  rng = np.random.default_rng(0)
  inputs = keras.Input((4, FEATURES), name="x")
  layer = _layer(keras, case, rng)
  model = keras.Model(inputs, layer(inputs))
  if case != "Normalization":
    # Positive draws: moving variances, gammas and PReLU slopes must stay valid; 0.5-1.5 is off every init.
    layer.set_weights([rng.uniform(0.5, 1.5, size=w.shape).astype(w.dtype) for w in layer.get_weights()])
  return model


@needs_onnx
@pytest.mark.parametrize("flavor,case", _params(), ids=str)
def test_layer_converts_and_matches_keras(flavor, case, tmp_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
  keras = keras_models.keras_for(flavor)
  keras.utils.set_random_seed(0)
  model = _model(keras, case)
  saved_model = onnx_models.save_keras_model(model, tmp_path / "native")
  job = onnx_models.build_job(saved_model, tmp_path)
  converted = onnx_convert.convert_saved_model(saved_model, "serving_default", job.signature,
                                               onnx_format.DEFAULT_OPSET)
  # Both signs and |x| up to ~9: the branches of piecewise activations and the tails of exp/erf.
  x = np.random.default_rng(1).normal(0.0, 3.0, size=(3, 4, FEATURES)).astype("float32")
  session = onnxruntime.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
  (got,) = session.run(None, {"x": x})
  expected = np.asarray(model(x, training=False))
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


# --- ops our handlers add, and what no tool here converts ------------------------------------------------------

def _converted_module(tmp_path, function, dtype="float32"):
  """Saves `function` of one (None, 8) input `x` as a SavedModel and converts it; returns the ONNX model."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
  module = tf.Module()
  module.serve = tf.function(lambda x: {"y": function(x)},
                             input_signature=[tf.TensorSpec([None, 8], dtype, name="x")])
  path = str(tmp_path / "native")
  tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
  job = onnx_models.build_job(path, tmp_path)
  return onnx_convert.convert_saved_model(path, "serving_default", job.signature, onnx_format.DEFAULT_OPSET)


def _run(model, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, {"x": x})[0]


@needs_onnx
@pytest.mark.parametrize("op", ["Erfc", "Expm1", "Log1p"])
def test_elementwise_ops_tf2onnx_lacks_match_tensorflow(op, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  function = {"Erfc": tf.math.erfc, "Expm1": tf.math.expm1, "Log1p": tf.math.log1p}[op]
  model = _converted_module(tmp_path, function)
  assert op not in {n.op_type for n in model.graph.node}
  # Log1p's domain is x > -1; the others take the whole line (erfc's tails, expm1 near 0 and large).
  x = np.linspace(-0.99 if op == "Log1p" else -6.0, 6.0, 24, dtype="float32").reshape(3, 8)
  np.testing.assert_allclose(_run(model, x), function(x).numpy(), rtol=1e-5, atol=1e-6)


@needs_onnx
def test_bucketize_counts_boundaries_at_or_below_like_tensorflow(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  boundaries = [-1.0, 0.0, 2.5]
  model = _converted_module(tmp_path, lambda x: tf.raw_ops.Bucketize(input=x, boundaries=boundaries))
  # Values exactly on a boundary belong to the bucket above it, as in TensorFlow.
  x = np.array([[-3.0, -1.0, -0.5, 0.0, 1.0, 2.5, 3.0, 99.0]] * 2, dtype="float32")
  got = _run(model, x)
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, tf.raw_ops.Bucketize(input=x, boundaries=boundaries).numpy())


@needs_onnx
def test_bucketize_of_int_inputs_compares_as_float(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  boundaries = [0.5, 3.0]
  model = _converted_module(tmp_path, lambda x: tf.raw_ops.Bucketize(input=x, boundaries=boundaries), "int32")
  x = np.arange(-4, 12, dtype="int32").reshape(2, 8)
  np.testing.assert_array_equal(_run(model, x), tf.raw_ops.Bucketize(input=x, boundaries=boundaries).numpy())


@needs_onnx
def test_token_ids_fed_as_float_stay_exact_in_the_fp16_variant(tmp_path):
  """The keras-io functional API guide feeds Embedding ids through float Inputs: FP16 would round id 9999 to
  10000 (out of the table) and 4097 to 4096 (another row)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import fp16  # pylint: disable=g-import-not-at-top
  table = tf.constant(np.random.default_rng(2).normal(size=(10000, 3)).astype("float32"))
  function = lambda x: tf.reduce_sum(tf.gather(table, tf.cast(x, tf.int32)), axis=-1)  # pylint: disable=unnecessary-lambda-assignment
  model, kept = fp16.convert_to_fp16(_converted_module(tmp_path, function))
  assert "integer casts" in kept
  x = np.array([[9999, 9998, 4097, 2049, 0, 1, 7, 5001]], dtype="float32")
  np.testing.assert_allclose(_run(model, x), function(x).numpy(), rtol=2e-3, atol=2e-3)


@needs_onnx
def test_spectrogram_fails_naming_rfft_and_tf2onnx(tmp_path):
  """Keras 3's MelSpectrogram takes the real and imaginary parts of an RFFT; tf2onnx 1.17 converts an RFFT
  only when its consumer is ComplexAbs. A known limit: the error names tf2onnx and the op. The layer where
  this Keras has it, else the same ops written directly (Keras 2)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  expected = r"tf2onnx failed converting the graph.*RFFT"
  if not hasattr(keras.layers, "MelSpectrogram"):
    def spectrum(x):
      transformed = tf.signal.rfft(x)
      return tf.math.real(transformed) ** 2 + tf.math.imag(transformed) ** 2
    with pytest.raises(onnx_convert.ConversionError, match=expected):
      _converted_module(tmp_path, spectrum)
    return
  inputs = keras.Input((256,), name="x")
  layer = keras.layers.MelSpectrogram(fft_length=64, sequence_stride=32, num_mel_bins=8)
  saved_model = onnx_models.save_keras_model(keras.Model(inputs, layer(inputs)), tmp_path / "native")
  job = onnx_models.build_job(saved_model, tmp_path)
  with pytest.raises(onnx_convert.ConversionError, match=expected):
    onnx_convert.convert_saved_model(saved_model, "serving_default", job.signature, onnx_format.DEFAULT_OPSET)


def test_every_case_is_named_once():
  cases = _cases()
  assert len(cases) == len(set(cases))
  assert any(case == "activation:gelu" for _, case in cases), "gelu, the op this sweep exists for, is missing"


@needs_onnx
def test_grouped_convolution_keras_compiles_with_xla_converts(tmp_path):
  """Keras 3 runs Conv2D(groups > 1) (ConvNeXt's depthwise convolutions) as a jit_compile tf.function, which
  grappler does not inline: without `inline_xla_functions` tf2onnx meets a StatefulPartitionedCall."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import convert as onnx_convert  # pylint: disable=g-import-not-at-top
  if keras_models.flavors()[0] != "keras3":
    # tf.keras 2.15 has no `__version__`: ask which flavour this line runs, not the module.
    pytest.skip(f"Keras 2 ({keras_models.flavors()[0]}) runs grouped convolutions without XLA")
  keras = onnx_models.primary_keras()
  inputs = keras.Input((8, 8, 4), name="x")
  model = keras.Model(inputs, keras.layers.Conv2D(6, 3, groups=2, padding="same")(inputs))
  saved_model = onnx_models.save_keras_model(model, tmp_path / "native")
  job = onnx_models.build_job(saved_model, tmp_path)
  converted = onnx_convert.convert_saved_model(saved_model, "serving_default", job.signature,
                                               onnx_format.DEFAULT_OPSET)
  (conv,) = [n for n in converted.graph.node if n.op_type == "Conv"]
  assert [a.i for a in conv.attribute if a.name == "group"] == [2]
  x = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype("float32")
  session = onnxruntime.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
  np.testing.assert_allclose(session.run(None, {"x": x})[0], np.asarray(model(x)), rtol=1e-4, atol=1e-5)


@needs_onnx
@pytest.mark.parametrize("binary", [True, False])
def test_bincount_converts_without_ops_tensorrt_cannot_parse(tmp_path, binary):
  """IntegerLookup/CategoryEncoding "multi_hot" and "count" (keras-io structured data): tf2onnx's own handler
  writes Unique and ScatterND, which TensorRT's ONNX parser refuses."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  function = lambda x: tf.math.bincount(tf.cast(x, tf.int32), minlength=6, maxlength=6, axis=-1,  # pylint: disable=unnecessary-lambda-assignment
                                         binary_output=binary, dtype=tf.float32)
  model = _converted_module(tmp_path, function)
  assert not {"Unique", "ScatterND", "Compress"} & {n.op_type for n in model.graph.node}
  x = np.array([[0, 1, 1, 5, 7, 2, 2, 2], [3, 3, 3, 3, 0, 0, 9, 1]], dtype="float32")
  np.testing.assert_array_equal(_run(model, x), function(x).numpy())
