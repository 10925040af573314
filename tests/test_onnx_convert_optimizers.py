"""Our choice of tf2onnx optimizers (`onnx_convert._optimize`) against tf2onnx's own list."""

import pytest

from tftrt_keras.formats.onnx import format as onnx_format
from tftrt_keras.formats.onnx import convert as onnx_convert

pytestmark = pytest.mark.tf

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access


@pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable here: {_MISSING}")
def test_every_optimizer_skipped_by_op_type_is_one_tf2onnx_runs():
  """A tf2onnx that renamed an optimizer would silently turn our skip off (slower, never wrong); one that
  dropped `_get_optimizers` would make us pass None (its default list). Either is worth knowing."""
  from tf2onnx import optimizer  # pylint: disable=g-import-not-at-top
  names = set(optimizer._get_optimizers())  # pylint: disable=protected-access
  skipped = set(onnx_convert._OPTIMIZER_NEEDS)  # pylint: disable=protected-access
  assert skipped <= names, skipped - names
  # The ones that rewrite the common ops always run.
  assert {"optimize_transpose", "fold_constants", "remove_identity"} <= names - skipped
