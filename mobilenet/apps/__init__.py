"""The brief's applications on offline data, built on trained checkpoints.

- :mod:`~mobilenet.apps.freeze`: transfer learning for the NumPy and the torch models alike
  (``freeze``, ``unfreeze``, ``replace_classifier``);
- :mod:`~mobilenet.apps.transfer`: few-shot transfer from the glyph corpus to digits and to
  held-out glyphs, four ways (``mobilenet transfer``);
- :mod:`~mobilenet.apps.embed`: embeddings of unseen classes, identification and verification:
  the face-recognition pattern (``mobilenet embed``).
"""
