"""Deployment and measurement: what runs the trained network elsewhere, and how fast.

- :mod:`~mobilenet.deploy.onnx_export`: ONNX export (dynamic batch) and its check by onnxruntime
  against the NumPy reference;
- :mod:`~mobilenet.deploy.state_dicts`: torchvision-format ``state_dict`` files in and out, and the
  checked reading of a classification checkpoint;
- :mod:`~mobilenet.deploy.bench`: ``mobilenet bench``, each side alone in its process, with
  :mod:`~mobilenet.deploy.cases` (what is timed), :mod:`~mobilenet.deploy.timing` (the timer) and
  one ``side_*`` module per library timed.
"""
