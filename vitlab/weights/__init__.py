"""Weights in and out of every ecosystem: converters, surgery, pretrained specs, safe file IO.

One pure converter per source (``convert_<source>.py``) with an explicit key map; :mod:`api`
ties them together; :mod:`surgery` resamples position tables and patch kernels and swaps heads;
:mod:`specs` is the table of known public checkpoints; :mod:`hub` downloads with hash checks.
"""

from vitlab.weights.api import EXPORT_FORMATS, IMPORT_FORMATS, Imported, detect_format, export_weights, import_weights

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "Imported", "detect_format", "export_weights", "import_weights"]
