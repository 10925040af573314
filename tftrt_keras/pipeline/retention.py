"""Retention: the newest exports stay, older ones go, with their Triton versions."""

from absl import logging

from tftrt_keras.artifacts.layout import ExportLayout


def retain_exports(root, keep, options):
  """Keeps the newest `keep` exports of `root` and drops the older ones' Triton versions with them.

  Never raises: retention must not hurt a training run (what could not be deleted is logged and stays).
  """
  try:
    ExportLayout(root).retain(keep)
  except Exception:  # pylint: disable=broad-except
    logging.exception("tftrt_keras: retention failed; old exports were left in place")
    return
  if options.triton_repository:
    try:
      from tftrt_keras.serving import triton  # pylint: disable=g-import-not-at-top
      triton.retain_for_export(root, options)
    except Exception:  # pylint: disable=broad-except
      logging.exception("tftrt_keras: Triton retention failed; old Triton versions were left in place")
