"""Weights in and out of every ecosystem: converters, surgery, pretrained specs, safe file IO.

One pure converter per source (``convert_<source>.py``) with an explicit key map; :mod:`formats`
is the one table of formats (suffixes, detection, read, to / from vitlab, peer for verification);
:mod:`api` imports and exports through it; :mod:`surgery` resamples position tables and patch
kernels and swaps heads; :mod:`specs` is the table of known public checkpoints; :mod:`hub`
downloads with hash checks; :mod:`vitlab_format` is vitlab's own self-describing file format and
:mod:`rebuild` turns such a file back into a model. DETR's converters are in :mod:`convert_detr`.
"""

from vitlab.weights.api import EXPORT_FORMATS, IMPORT_FORMATS, Imported, detect_format, export_weights, import_weights

__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "Imported", "detect_format", "export_weights", "import_weights"]
