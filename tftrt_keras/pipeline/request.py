"""What the training process hands the worker: everything needed to finish one export, as JSON."""

import dataclasses
import json
import os

from tftrt_keras.options import ConversionOptions

REQUEST_FILE = "request.json"


@dataclasses.dataclass
class ExportRequest:
  """One export, after the fast part (normal SavedModel, calibration samples) is on disk.

  Attributes:
    root: the export root (see `artifacts.layout`).
    version: the export's version number.
    signature_key: signature of the normal export to freeze and convert.
    options: `ConversionOptions`.
    calibration_batch_sizes: sizes of the captured batches, in order; engines are prebuilt for these shapes.
    has_calibration, has_verification: whether `calibration.npz` / `verification.npz` were written.
  """

  root: str
  version: int
  signature_key: str = "serving_default"
  options: ConversionOptions = dataclasses.field(default_factory=ConversionOptions)
  calibration_batch_sizes: list = dataclasses.field(default_factory=list)
  has_calibration: bool = False
  has_verification: bool = False

  def to_json(self):
    data = dataclasses.asdict(self)
    data["options"] = self.options.to_json()
    return data

  @classmethod
  def from_json(cls, data):
    data = dict(data)
    data["options"] = ConversionOptions.from_json(data["options"])
    return cls(**data)

  def write(self, directory):
    path = os.path.join(directory, REQUEST_FILE)
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=2)
    return path

  @classmethod
  def read(cls, path):
    with open(path) as f:
      return cls.from_json(json.load(f))
