"""Training of the embedded models (``flexguard train encoder`` and ``train ensemble``).

``config`` (options of both trainings), ``cv`` (the shared cross-validation protocol and
cut-point calibration), ``frozen`` (frozen-embedding heads), ``crossencoder`` (the
fine-tuned cross-encoder and its ONNX export), ``ensemble`` (mixing trained models on their
out-of-fold predictions) and ``cards`` (model cards). Training imports the run-time pieces
from :mod:`flexguard.embedded`, never the other way round.
"""
