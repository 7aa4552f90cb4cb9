"""The application on top of the libraries (``mobilenet_arch``, ``numpy_impl``, ``kernels``,
``torch_impl``), one sub-package per capability:

- :mod:`mobilenet.data`: offline data (digits, shapes, image folders, CIFAR-10, the glyph
  corpus, generated scenes) and seeded batches;
- :mod:`mobilenet.training`: the one training loop, its configuration, the runners;
- :mod:`mobilenet.detection`: SSDLite's training task, prediction and COCO metrics;
- :mod:`mobilenet.apps`: transfer learning and embeddings;
- :mod:`mobilenet.deploy`: ONNX export and check, torchvision weights, ``mobilenet bench``;
- :mod:`mobilenet.cli`: the command line, one module per command.

Beside them, modules every capability shares: :mod:`~mobilenet.backends` (what a run executes
on), :mod:`~mobilenet.registry` (the modules that run it, loaded on demand),
:mod:`~mobilenet.checkpoint` (atomic files, checkpoints, the folder lock),
:mod:`~mobilenet.extras` (optional dependencies), :mod:`~mobilenet.summary` (parameters and
multiply-adds) and :mod:`~mobilenet.verify` (the NumPy model against torch).
"""

__version__ = "0.1.0"
