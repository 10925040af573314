"""A quiet console for the entry points: TensorFlow's start-up noise and INFO lines stay out of the user's log.

`quiet_tensorflow()` runs before TensorFlow loads and sets only what the user has not (`TF_CPP_MIN_LOG_LEVEL`,
absl verbosity); `TF_ENABLE_ONEDNN_OPTS` is never touched (it changes numerics). `import_tensorflow()` hides
what the import prints on file descriptor 2, and shows it only when the import fails.
"""

import contextlib
import logging
import os
import sys
import tempfile

# TensorFlow's C++ log level: 3 hides INFO, WARNING and ERROR lines of the C++ runtime. The start-up factory
# registration messages are ERROR lines, so 2 is not enough.
QUIET_CPP_LOG_LEVEL = "3"
CPP_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# What the user had before we quieted the console ("" when unset), so that a child process that writes its own
# log file (the export worker) can restore the full level there.
ORIGINAL_CPP_LOG_LEVEL_VARIABLE = "TFTRT_KERAS_ORIGINAL_TF_CPP_MIN_LOG_LEVEL"


def tensorflow_is_loaded():
  return "tensorflow" in sys.modules


def quiet_tensorflow(environ=None):
  """Hides TensorFlow's C++ start-up noise and INFO logging from this process's console; call before importing it.

  Args:
    environ: the environment to set `TF_CPP_MIN_LOG_LEVEL` in (`os.environ` by default).

  Returns:
    False when TensorFlow was already loaded with another C++ log level, else True.
  """
  environ = os.environ if environ is None else environ
  took_effect = True
  if CPP_LOG_LEVEL_VARIABLE not in environ:
    environ.setdefault(ORIGINAL_CPP_LOG_LEVEL_VARIABLE, "")
    environ[CPP_LOG_LEVEL_VARIABLE] = QUIET_CPP_LOG_LEVEL
    took_effect = not tensorflow_is_loaded()
  # The `tensorflow` Python logger (tf.get_logger()) and absl's handler both print to stderr.
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  quiet_absl()
  return took_effect


def quiet_absl():
  """absl logging at ERROR, unless the user asked for a verbosity on the command line (`--verbosity`).

  absl's `app.run` sets the verbosity from its flag after parsing, so entry points call this (again) in
  `main`; before parsing it only sets the default.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  verbosity = flags.FLAGS["verbosity"] if "verbosity" in flags.FLAGS else None
  if verbosity is not None and verbosity.present:
    return
  absl_logging.set_verbosity(absl_logging.ERROR)


def import_tensorflow():
  """Imports and returns `tensorflow`, keeping what it prints while loading off the console.

  Only when this module quieted the console and TensorFlow is not loaded yet; on failure the output goes to stderr.
  """
  quiet_tensorflow()
  if tensorflow_is_loaded() or ORIGINAL_CPP_LOG_LEVEL_VARIABLE not in os.environ:
    import tensorflow  # pylint: disable=g-import-not-at-top
    return tensorflow
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with tempfile.TemporaryFile() as captured:
      os.dup2(captured.fileno(), 2)
      try:
        import tensorflow  # pylint: disable=g-import-not-at-top
      except BaseException:
        os.dup2(saved, 2)
        captured.seek(0)
        sys.stderr.write(captured.read().decode("utf-8", "replace"))
        sys.stderr.flush()
        raise
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)
  return tensorflow


@contextlib.contextmanager
def logger_at_error(name=None):
  """Lowers a chatty Python logger (`name`; the root logger for None) to ERROR while the block runs: tf2onnx
  logs every node at INFO, ONNX Runtime's quantizer warns on the root logger; errors still show."""
  logger = logging.getLogger(name)
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)
