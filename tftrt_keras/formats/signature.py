"""Reading a SavedModel's serving signature: its inputs and outputs, by name, dtype and shape."""

import dataclasses
import os

from tftrt_keras.errors import invalid_argument

DEFAULT_SIGNATURE_KEY = "serving_default"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One signature input or output. `shape` has None for unknown dimensions (batch first)."""
  name: str
  dtype: str
  shape: tuple

  def to_json(self):
    return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

  @classmethod
  def from_spec(cls, name, spec):
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
    return cls(name, spec.dtype.name, shape)


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
  key: str
  inputs: tuple   # of TensorInfo, sorted by name
  outputs: tuple  # of TensorInfo, sorted by name

  def input(self, name):
    return next(t for t in self.inputs if t.name == name)


def check_saved_model_dir(saved_model_dir, argument="saved_model_dir"):
  """Raises ValueError unless `saved_model_dir` holds a readable SavedModel."""
  if not isinstance(saved_model_dir, (str, os.PathLike)) or not saved_model_dir:
    raise invalid_argument(argument, saved_model_dir, "the path of a SavedModel directory")
  pb = os.path.join(saved_model_dir, "saved_model.pb")
  if not os.path.isdir(saved_model_dir) or not os.path.isfile(pb):
    raise invalid_argument(argument, str(saved_model_dir),
                           "a SavedModel directory containing saved_model.pb (none found there)")
  if not os.access(pb, os.R_OK):
    raise invalid_argument(argument, str(saved_model_dir), "a readable SavedModel (saved_model.pb is not readable)")


def load_signature(saved_model_dir, signature_key=DEFAULT_SIGNATURE_KEY, argument="saved_model_dir"):
  """Loads the SavedModel and returns (loaded_object, concrete_function, SignatureInfo).

  Keep `loaded_object` referenced while using the function: the function dies with it.

  Raises:
    ValueError: the directory is not a loadable SavedModel, or it has no signature `signature_key`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_saved_model_dir(saved_model_dir, argument)
  try:
    loaded = tf.saved_model.load(str(saved_model_dir))
  except Exception as err:  # pylint: disable=broad-except
    raise invalid_argument(argument, str(saved_model_dir), "a loadable SavedModel",
                           hint=f"Loading failed: {type(err).__name__}: {err}") from err
  available = sorted(loaded.signatures.keys())
  if signature_key not in loaded.signatures:
    raise invalid_argument("signature_key", signature_key, f"one of the model's signatures {available}")
  function = loaded.signatures[signature_key]
  _, input_specs = function.structured_input_signature
  outputs = function.structured_outputs
  info = SignatureInfo(
      signature_key,
      tuple(TensorInfo.from_spec(name, input_specs[name]) for name in sorted(input_specs)),
      tuple(TensorInfo.from_spec(name, outputs[name]) for name in sorted(outputs)))
  return loaded, function, info
