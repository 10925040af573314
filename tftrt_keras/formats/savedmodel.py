"""Running a SavedModel signature: the normal export (the reference every variant is compared with) and the
TF-TRT variants, which are SavedModels too."""

from tftrt_keras.formats.base import Runner


class SavedModelRunner(Runner):
  """One signature of a SavedModel, loaded once."""

  def __init__(self, path, signature_key):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    # The function dies with its loaded object: keep both.
    self._loaded = tf.saved_model.load(path)
    self._function = self._loaded.signatures[signature_key]

  def prepared_call(self, feeds):
    tensors = {name: self._tf.constant(value) for name, value in feeds.items()}
    # .numpy() waits for the device: the time includes getting the result back, as a server's does.
    return lambda: {name: t.numpy() for name, t in self._function(**tensors).items()}

  def close(self):
    self._function = self._loaded = None
