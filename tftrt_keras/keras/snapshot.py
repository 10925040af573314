"""Writing a Keras model's normal SavedModel quickly, again and again during training.

The serving function is traced once and kept; later exports only serialise the graph and current variables.
The `serving_default` signature wraps `model(inputs, training=False)`, named as `model.export()` names them.
"""

import os

import numpy as np

from tftrt_keras.errors import invalid_argument
from tftrt_keras.keras import internals as keras_internals


def _spec_with_free_batch(tf, name, shape, dtype):
  shape = [None] + list(shape[1:])
  return tf.TensorSpec(shape, tf.as_dtype(dtype), name=name)


def check_input_signature(input_signature):
  """Raises ValueError unless `input_signature` is None, a TensorSpec, or a list/tuple/dict of them."""
  if input_signature is None:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  leaves = tf.nest.flatten(input_signature)
  if not leaves or not all(isinstance(s, tf.TensorSpec) for s in leaves):
    raise invalid_argument("input_signature", input_signature,
                           "a tf.TensorSpec, or a list or dict of tf.TensorSpec (batch dimension None)")


def _named(tf, structure):
  """Gives every spec a signature name: dict keys, else its own name, else input_<i>."""
  if isinstance(structure, dict):
    return {k: tf.TensorSpec(s.shape, s.dtype, name=k) for k, s in structure.items()}
  if isinstance(structure, (list, tuple)):
    return type(structure)(tf.TensorSpec(s.shape, s.dtype, name=s.name or f"input_{i}")
                           for i, s in enumerate(structure))
  return tf.TensorSpec(structure.shape, structure.dtype, name=structure.name or "input_0")


def named_signature(input_signature):
  """A user's `input_signature` with a name on every spec (dict keys, its own name, or input_<i>)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return _named(tf, input_signature)


def signature_from_model(model):
  """The model's own input structure as TensorSpecs (functional/sequential models), or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  inputs = getattr(model, "inputs", None)
  if not inputs:
    return None
  structure = _input_structure(model)
  structure = inputs if structure is None else structure

  def to_spec(t):
    name = getattr(t, "name", None)
    name = name.split(":")[0] if name else None
    return _spec_with_free_batch(tf, name, tuple(t.shape), getattr(t.dtype, "name", t.dtype))
  return _named(tf, tf.nest.map_structure(to_spec, structure))


def _input_structure(model):
  """The nesting of inputs the model's `call` expects: a single tensor, a list or a dict.

  A Keras 3 `Sequential` lists its inputs while the functional model it wraps expects one tensor (Keras warns).
  """
  for owner in (getattr(model, "_functional", None), model):
    if owner is None:
      continue
    for attribute in ("_inputs_struct", "_nested_inputs"):  # Keras 3, Keras 2
      structure = getattr(owner, attribute, None)
      if structure is not None:
        return structure
  return None


def signature_from_batch(x):
  """TensorSpecs matching one batch of inputs (any batch size)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  structure = tf.nest.map_structure(lambda v: _spec_with_free_batch(tf, None, np.shape(v), np.asarray(v).dtype), x)
  if isinstance(structure, tuple) and len(structure) == 1:
    structure = structure[0]
  return _named(tf, structure)


def _output_names(model, count):
  """The serving signature's output names: the model's own (its output layers' names), `output_<i>` only
  where it has none. Keras 3.6 gives a Sequential model no `output_names`; its output layers still have names
  (`probabilities`), which are what ONNX, Triton and the manifest should show."""
  names = list(getattr(model, "output_names", None) or [])
  if len(names) != count:
    names = []
    for tensor in getattr(model, "outputs", None) or []:
      history = getattr(tensor, "_keras_history", None)
      layer = history[0] if history else None
      names.append(getattr(layer, "name", None))
  if len(names) == count and all(names) and len(set(names)) == count:
    return names
  return [f"output_{i}" for i in range(count)]


class SavedModelSnapshotter:
  """Writes the normal SavedModel of `model` into a directory; traces once, saves many times.

  Args:
    model: a built Keras model (Keras 2 or 3).
    input_signature: TensorSpec structure the serving signature takes.
  """

  def __init__(self, model, input_signature):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._model = model
    self.signature = input_signature
    module = tf.Module()
    # Track variables and any hub.KerasLayer's loaded module (its assets and tables), not the Keras objects
    # themselves: tracking a Keras 2 model would make tf.saved_model.save serialise every layer's call graphs.
    module.model_variables = list(model.variables)
    # hub.KerasLayer revives its module as an AutoTrackable, not a tf.Module: test for Trackable.
    module.loaded_resources = [keras_internals.loaded_hub_module(layer) for layer in _layers(model)
                               if isinstance(keras_internals.loaded_hub_module(layer),
                                             tf.__internal__.tracking.Trackable)]

    def serve(inputs):
      outputs = model(inputs, training=False)
      if isinstance(outputs, dict):
        return dict(outputs)
      flat = tf.nest.flatten(outputs)
      return dict(zip(_output_names(model, len(flat)), flat))

    self._function = tf.function(serve).get_concrete_function(input_signature)
    # Lookup tables (TextVectorization, StringLookup, tf.lookup in custom layers) and any other resource the
    # serving function captures: tracked with their initializers and assets, as Keras's own export does.
    module.captured_resources = _captured_resources(tf, self._function, module.model_variables)
    module.serve = self._function
    self._module = module

  _graph = None  # saved_model.pb of the first export, when later ones may reuse it
  _assets = None  # {path under assets/: bytes} of the first export, written again with the graph

  def save(self, directory):
    """Writes the SavedModel into the (empty) `directory`.

    The first call runs `tf.saved_model.save`; the graph never changes, so later calls rewrite its `saved_model.pb`
    and assets plus a fresh checkpoint (variables, mutable tables). Assets over ASSETS_KEPT_BYTES take the full path.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._graph is None:
      tf.saved_model.save(self._module, directory, signatures={"serving_default": self._function})
      self._assets = _read_assets(os.path.join(directory, "assets"))
      if self._assets is None:
        self._graph = False
      else:
        with open(os.path.join(directory, "saved_model.pb"), "rb") as f:
          self._graph = f.read()
      return
    if self._graph is False:
      tf.saved_model.save(self._module, directory, signatures={"serving_default": self._function})
      return
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
      f.write(self._graph)
    os.makedirs(os.path.join(directory, "assets"), exist_ok=True)
    for name, content in self._assets.items():
      path = os.path.join(directory, "assets", name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(content)
    tf.train.Checkpoint(self._module).write(os.path.join(directory, "variables", "variables"))
    from tensorflow.python.saved_model import fingerprinting_utils  # pylint: disable=g-import-not-at-top
    fingerprinting_utils.write_fingerprint(directory)


# Assets up to this size are kept in memory for the quick re-save; larger ones are copied by a full save.
ASSETS_KEPT_BYTES = 64 << 20


def _read_assets(assets_dir):
  """{path relative to `assets_dir`: bytes}, or None when they add up to more than ASSETS_KEPT_BYTES."""
  assets, total = {}, 0
  for parent, _, files in os.walk(assets_dir):
    for name in files:
      path = os.path.join(parent, name)
      total += os.path.getsize(path)
      if total > ASSETS_KEPT_BYTES:
        return None
      with open(path, "rb") as f:
        assets[os.path.relpath(path, assets_dir)] = f.read()
  return assets


def _layers(model):
  flatten = getattr(model, "_flatten_layers", None)
  if flatten is not None:
    return list(flatten(include_self=False))
  return list(getattr(model, "layers", []))


def _captured_resources(tf, function, variables):
  """The objects owning the resource handles `function` captures (tables, ...), `variables` left out.

  A TrackableResource (or variable) marks its handle with a weak reference to itself: that is how a capture
  is traced back to the object tf.saved_model.save must find in the tracked object graph.
  """
  known = set()
  for variable in variables:
    known.add(id(variable))
    known.add(id(getattr(variable, "value", None)))  # Keras 3: the tf.Variable behind a keras.Variable
  owners = []
  for capture in function.captured_inputs:
    if capture.dtype != tf.resource:
      continue
    reference = getattr(capture, "_parent_trackable", None)
    owner = reference() if reference is not None else None
    if owner is not None and id(owner) not in known:
      known.add(id(owner))
      owners.append(owner)
  return owners
