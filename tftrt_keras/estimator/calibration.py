"""Estimator sample capture: which evaluation tensors are the served features, a hook that samples them (a
calibration sample and a disjoint verification sample), the signatures an export has, and the form the chosen
signature takes (serialized tf.Example for parsing receivers, raw arrays otherwise).
"""

from absl import logging
import numpy as np
import tensorflow as tf

from tftrt_keras.samples.reservoir import SplitReservoir
from tftrt_keras.formats.signature import SignatureInfo, TensorInfo

# Appended to a serialized tf.Example that would end in NUL: `.npz` string arrays are fixed-width numpy
# bytes, which drop trailing NULs, and a truncated Example no longer parses. Parsing ignores unknown features.
_PADDING_FEATURE = "~tftrt_keras_padding"
# The key the evaluation labels are fetched under beside the features (for the model's own metrics).
LABEL_KEY = "~tftrt_keras_label"


class CalibrationUnusable(Exception):
  """Calibration samples cannot be built for this export; the message says why (recorded in the manifest)."""


# ----------------------------------------------------------------------------------------------- receiver
class ReceiverSpec:
  """What the serving input receiver feeds the model, read once in a throwaway graph.

  Attributes:
    features: {feature key: (tf.DType, tf.TensorShape)} the model receives.
    inputs: {receiver tensor key: graph tensor name}.
    raw_feature: {receiver tensor key: feature key} for receiver tensors that are fed to the model unchanged.
    parsing: True when a single string receiver tensor is parsed into the features (tf.Example input).
  """

  def __init__(self, serving_input_receiver_fn):
    with tf.Graph().as_default():
      receiver = serving_input_receiver_fn()
      features = receiver.features
      if not isinstance(features, dict):
        features = {"feature": features}
      self.features = {k: (t.dtype, t.shape) for k, t in features.items() if isinstance(t, tf.Tensor)}
      self.inputs = {k: t.name for k, t in receiver.receiver_tensors.items()}
      by_name = {t.name: k for k, t in features.items() if isinstance(t, tf.Tensor)}
      self.raw_feature = {k: by_name[t.name] for k, t in receiver.receiver_tensors.items() if t.name in by_name}
      # tf.Example input: one string receiver tensor that a ParseExample op turns into the features (as
      # build_parsing_serving_input_receiver_fn makes). Any other transformation cannot be inverted here.
      parsed = {t.name for op in tf.compat.v1.get_default_graph().get_operations()
                if op.type in ("ParseExample", "ParseExampleV2") for t in op.inputs}
      strings = [k for k, t in receiver.receiver_tensors.items() if t.dtype == tf.string and t.name in parsed]
      self.parsing = len(receiver.receiver_tensors) == 1 and len(strings) == 1 and not self.raw_feature


def signature_keys(saved_model_dir):
  """The serving signatures of a SavedModel, sorted, read from `saved_model.pb` (no variables loaded).

  Keys starting with `__` (the init op's) are not signatures a user calls, and are left out.
  """
  from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-import-not-at-top
  saved_model = loader_impl.parse_saved_model(saved_model_dir)
  return sorted(k for k in saved_model.meta_graphs[0].signature_def if not k.startswith("__"))


def signature_of(saved_model_dir, signature_key):
  """Reads a signature's inputs from `saved_model.pb` without loading the model (no variables, fast)."""
  from tensorflow.python.saved_model import loader_impl  # pylint: disable=g-import-not-at-top
  saved_model = loader_impl.parse_saved_model(saved_model_dir)
  signature_def = saved_model.meta_graphs[0].signature_def[signature_key]

  def info(name, proto):
    shape = tf.TensorShape(proto.tensor_shape)
    return TensorInfo(name, tf.as_dtype(proto.dtype).name, tuple(shape.as_list()) if shape.rank is not None else None)
  inputs = tuple(info(k, signature_def.inputs[k]) for k in sorted(signature_def.inputs))
  outputs = tuple(info(k, signature_def.outputs[k]) for k in sorted(signature_def.outputs))
  tensor_names = {k: signature_def.inputs[k].name for k in signature_def.inputs}
  return SignatureInfo(signature_key, inputs, outputs), tensor_names


def _feature_proto(array):
  array = np.asarray(array).reshape(-1)
  if array.dtype.kind == "f":
    return tf.train.Feature(float_list=tf.train.FloatList(value=array.astype(np.float32)))
  if array.dtype.kind in "iub":
    return tf.train.Feature(int64_list=tf.train.Int64List(value=array.astype(np.int64)))
  if array.dtype.kind in "SO":
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(v) for v in array]))
  if array.dtype.kind == "U":
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in array]))
  raise CalibrationUnusable(f"cannot write a feature of dtype {array.dtype} into a tf.Example")


def serialize_examples(features):
  """Serializes a batch {feature key: array (samples on axis 0)} into tf.Example bytes, one per sample.

  The bytes never end in NUL, so they survive numpy's fixed-width string arrays (and the `.npz`) intact.
  """
  keys = sorted(features)
  count = len(np.asarray(features[keys[0]]))
  serialized = []
  for row in range(count):
    example = tf.train.Example()
    for key in keys:
      example.features.feature[key].CopyFrom(_feature_proto(np.asarray(features[key])[row]))
    data = example.SerializeToString(deterministic=True)
    if data.endswith(b"\0"):
      example.features.feature[_PADDING_FEATURE].bytes_list.value.append(b"\x01")
      data = example.SerializeToString(deterministic=True)
      if data.endswith(b"\0"):
        raise CalibrationUnusable("a serialized tf.Example ends in a NUL byte, which the .npz string array "
                                   "would drop; pass calibration_input_fn with serialized examples instead")
    serialized.append(data)
  return np.array(serialized, dtype=bytes)


def _kind(dtype):
  dtype = tf.as_dtype(dtype)
  if dtype == tf.string:
    return "string"
  if dtype.is_bool:
    return "bool"
  return "float" if dtype.is_floating else "int" if dtype.is_integer else dtype.name


def _elements_per_sample(shape):
  shape = tf.TensorShape(shape)
  if shape.rank is None or not shape[1:].is_fully_defined():
    return None
  return int(np.prod(shape[1:].as_list(), dtype=np.int64))


def _fits(output, dtype, shape):
  """Whether an input-pipeline tensor can be the feature of dtype/shape the serving receiver makes."""
  if _kind(output.dtype) != _kind(dtype):
    return False
  got, want = _elements_per_sample(output.shape), _elements_per_sample(shape)
  return got is None or want is None or got == want


def _alignments(outputs, specs, start=0):
  """Every order-preserving assignment of `specs` to `outputs` (tf.data flattens a dict by sorted key)."""
  if not specs:
    yield ()
    return
  for i in range(start, len(outputs)):
    if _fits(outputs[i], *specs[0]):
      for rest in _alignments(outputs, specs[1:], i + 1):
        yield (i,) + rest


def find_feature_tensors(graph, receiver):
  """Finds, in an evaluation graph, the input-pipeline tensors holding the features the serving model takes.

  `IteratorGetNext`'s outputs are `tf.nest.flatten((features, labels))`; served features are matched to them in
  key order by dtype kind and per-sample size (the first outputs when the features are exactly the served ones,
  else the match must be unique).

  Returns:
    {feature key: tensor}.

  Raises:
    CalibrationUnusable: no or several possible matches (the message says what to do).
  """
  nexts = [op for op in graph.get_operations() if op.type in ("IteratorGetNext", "IteratorGetNextSync")]
  if len(nexts) != 1:
    raise CalibrationUnusable(
        f"calibration_hook found {len(nexts)} tf.data iterators in the evaluation graph (it needs exactly one: an "
        "eval input_fn returning a tf.data.Dataset); pass calibration_input_fn instead")
  outputs = list(nexts[0].outputs)
  keys = sorted(receiver.features)
  specs = [receiver.features[k] for k in keys]
  if len(outputs) > len(keys) and all(_fits(outputs[i], *specs[i]) for i in range(len(keys))):
    return {k: outputs[i] for i, k in enumerate(keys)}
  matches = []
  for match in _alignments(outputs, specs):
    matches.append(match)
    if len(matches) > 1:
      break
  if len(matches) != 1:
    raise CalibrationUnusable(
        f"calibration_hook cannot tell which evaluation inputs are the served features {keys} "
        f"({'several' if matches else 'no'} input-pipeline outputs match their dtypes and sizes); "
        "pass calibration_input_fn instead")
  return {k: outputs[i] for k, i in zip(keys, matches[0])}


def find_label_tensor(graph, features):
  """The evaluation labels: the iterator's last output (`(features, labels)` flattens labels last) when it is
  not a served feature and holds one value or one row per sample; None otherwise (dict labels, no labels)."""
  (iterator,) = [op for op in graph.get_operations() if op.type in ("IteratorGetNext", "IteratorGetNextSync")]
  last = iterator.outputs[-1]
  if any(last is t for t in features.values()) or last.shape.rank not in (None, 1, 2):
    return None
  return last


class CalibrationCaptureHook(tf.compat.v1.train.SessionRunHook):
  """Keeps, from each evaluation pass, a calibration sample and a disjoint verification sample (`SplitReservoir`).

  Put it in `EvalSpec(hooks=[exporter.calibration_hook])`. A batch's feature tensors are added to the step's
  fetches only when the reservoir wants it, so batches not kept cost nothing.

  Attributes (of the last captured evaluation):
    batches, indices: the calibration sample ([{feature key: array}]) and its batch positions, in pass order.
    verification_batches, verification_indices: the verification sample and its batch positions.
    labels, verification_labels: the evaluation labels of those batches, batch for batch (None: none).
    batches_seen: batches in the pass.
    global_step: the checkpoint step the pass evaluated.
    problem: why the pass could not be captured, or None.
  """

  def __init__(self, exporter, calibration_batches, verification_samples=0, seed=0):
    self._exporter = exporter
    self._verification_samples = int(verification_samples)
    # Until the first batch tells the batch size, one verification batch stands for them: it also makes the
    # pass's first batch wanted when no calibration batch is (calibration_input_fn).
    self._reservoir = SplitReservoir(calibration_batches, 1 if self._verification_samples > 0 else 0, seed=seed)
    self._sized = self._verification_samples <= 0
    self._tensors = None
    self._global_step_tensor = None
    self._step_of_pass = None
    self._wanted = False
    self.problem = None
    self.global_step = None
    self.batches, self.indices = [], []
    self.verification_batches, self.verification_indices = [], []
    self.labels, self.verification_labels = [], []
    self.batches_seen = 0

  @property
  def capacity(self):
    """Calibration batches wanted from each pass."""
    return self._reservoir.calibration_capacity

  @property
  def verification_samples(self):
    """Verification samples wanted from each pass (0: none)."""
    return self._verification_samples

  def begin(self):
    self._reservoir.begin_pass()
    self._tensors, self.problem = None, None
    if self._reservoir.capacity <= 0:
      return
    try:
      self._tensors = find_feature_tensors(tf.compat.v1.get_default_graph(), self._exporter.receiver_spec())
      label = find_label_tensor(tf.compat.v1.get_default_graph(), self._tensors)
      if label is not None:
        self._tensors[LABEL_KEY] = label
    except CalibrationUnusable as err:
      self.problem = str(err)
      logging.warning("tftrt_keras: %s", err)
    self._global_step_tensor = tf.compat.v1.train.get_global_step()

  def after_create_session(self, session, coord):
    del coord
    if self._global_step_tensor is not None:
      self._step_of_pass = int(session.run(self._global_step_tensor))

  def before_run(self, run_context):
    del run_context
    self._wanted = bool(self._tensors) and self._reservoir.wants()
    return tf.compat.v1.train.SessionRunArgs(self._tensors) if self._wanted else None

  def after_run(self, run_context, run_values):
    del run_context
    if not self._tensors:
      return
    if not self._wanted:
      self._reservoir.skip()
      return
    batch = {k: np.asarray(v) for k, v in run_values.results.items()}
    self._reservoir.offer(batch)
    if not self._sized:  # the first batch of the first pass: now the verification size in batches is known
      self._reservoir.set_verification_capacity(-(-self._verification_samples // max(1, _batch_size(batch))),
                                                samples=self._verification_samples)
      self._sized = True

  def end(self, session):
    del session
    if not self._tensors:
      return
    self.batches_seen = self._reservoir.seen
    self._reservoir.end_pass()
    self.batches, self.labels = _without_labels(self._reservoir.last_pass)
    self.indices = list(self._reservoir.last_indices)
    self.verification_indices = list(self._reservoir.last_verification_indices)
    self.verification_batches, self.verification_labels = _without_labels(self._reservoir.last_verification)
    self.global_step = self._step_of_pass


def _without_labels(batches):
  """([features batch], [labels array, or None when the pass had none]) of captured batches."""
  return [{k: v for k, v in b.items() if k != LABEL_KEY} for b in batches], [b.get(LABEL_KEY) for b in batches]


def _batch_size(batch):
  return len(next(iter(batch.values())))

