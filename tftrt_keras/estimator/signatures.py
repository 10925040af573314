"""Which signature of an Estimator's export the variants are built from: the one named, else the one a user
would mean."""

from tftrt_keras.errors import invalid_argument


# The signatures a user means when none is named, in order of preference.
PREFERRED_SIGNATURE_KEYS = ("serving_default", "predict")


def choose_signature_key(available, requested=None):
  """The signature an export's variants are built from.

  Args:
    available: the export's signature keys.
    requested: the key asked for, or None: `serving_default`, else `predict`, else the only one.

  Raises:
    ValueError: `requested` is not available, or the choice is ambiguous; the message lists the available ones.
  """
  available = sorted(available)
  if requested is not None:
    if requested not in available:
      raise invalid_argument("signature_key", requested, f"one of the export's signatures {available}")
    return requested
  for key in PREFERRED_SIGNATURE_KEYS:
    if key in available:
      return key
  if len(available) == 1:
    return available[0]
  raise invalid_argument("signature_key", requested, f"one of the export's signatures {available}",
                         hint="The export has neither serving_default nor predict, and more than one signature: "
                              "name the one to convert.")
