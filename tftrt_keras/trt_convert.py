"""The only module that talks to TF-TRT: build the converter's arguments, call it, translate its errors.

Kept thin on purpose: everything around it (freezing, calibration data, layout, manifest, the worker) is
plain TensorFlow and tested on machines without TensorRT; this file is covered by the `trt` test tier.
"""

from tftrt_keras.conversion_backend import ConversionUnavailable


class TfTrtBackend:
  """TF-TRT (`TrtGraphConverterV2`) as a conversion backend."""

  name = "tftrt"

  def __init__(self):
    from tftrt_keras.preflight import check_tensorrt  # pylint: disable=g-import-not-at-top
    self._status = check_tensorrt()

  def unavailable_reason(self):
    return None if self._status.usable else self._status.reason

  def environment(self):
    return self._status.environment()

  def convert(self, saved_model_dir, signature_key, precision, options, calibration_batches, build_batches,
              output_dir):
    """Converts, calibrates (INT8), prebuilds engines for `build_batches`' shapes, and saves to `output_dir`.

    Args:
      saved_model_dir: the normal export.
      signature_key: signature to convert.
      precision: "FP32", "FP16" or "INT8".
      options: `ConversionOptions`.
      calibration_batches: list of {input name: array}; fed to INT8 calibration.
      build_batches: list of {input name: array} whose shapes the engines are built for, so the first
        request in serving builds nothing. Empty: engines build lazily on first use.
      output_dir: where the converted SavedModel goes.
    """
    reason = self.unavailable_reason()
    if reason:
      raise ConversionUnavailable(reason)
    from tensorflow.python.compiler.tensorrt import trt_convert as trt  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    # TF-TRT calls the signature with each yielded dict as keyword arguments.
    def feeds(batches):
      def input_fn():
        for batch in batches:
          yield {name: tf.constant(value) for name, value in batch.items()}
      return input_fn

    try:
      converter = self._converter(trt, saved_model_dir, signature_key, precision, options)
    except RuntimeError as err:
      # "Tensorflow has not been built with TensorRT support" / an unloadable TensorRT: this machine, not
      # this model, is the problem.
      raise ConversionUnavailable(f"TF-TRT refused to start: {err}") from err
    if precision == "INT8":
      if not calibration_batches:
        raise ValueError("INT8 conversion needs calibration batches and none were given")
      # TF-TRT wants every calibration batch to have one shape; the last batch of a split is often short.
      shape = {name: np.shape(value) for name, value in calibration_batches[0].items()}
      same_shape = [b for b in calibration_batches if {n: np.shape(v) for n, v in b.items()} == shape]
      # With dynamic shapes TF-TRT stores the calibration function and calibrates inside `build()`.
      converter.convert(calibration_input_fn=feeds(same_shape))
      # build() is what calibrates in dynamic-shape mode, so INT8 always builds (on the calibration shapes at
      # least); save() refuses an uncalibrated INT8 model.
      build_batches = build_batches or same_shape
    else:
      converter.convert()
    if build_batches:
      converter.build(input_fn=feeds(build_batches))
    converter.save(output_dir)

  @staticmethod
  def _converter(trt, saved_model_dir, signature_key, precision, options):
    """The TF-TRT converter for one precision."""
    # Several batch sizes (1 .. max_batch_size) must share engines: dynamic shapes with a "Range" profile
    # cover every size between the smallest and largest shape seen in `build()`.
    return trt.TrtGraphConverterV2(
        input_saved_model_dir=saved_model_dir,
        input_saved_model_signature_key=signature_key,
        precision_mode=precision,
        max_workspace_size_bytes=options.max_workspace_size_bytes,
        minimum_segment_size=options.minimum_segment_size,
        maximum_cached_engines=options.maximum_cached_engines,
        use_calibration=precision == "INT8",
        use_dynamic_shape=True,
        dynamic_shape_profile_strategy="Range",
        allow_build_at_runtime=True)
