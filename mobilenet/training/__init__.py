"""Training: one loop for every kind of run, its configuration, and a runner per model kind.

- :mod:`~mobilenet.training.loop`: the loop (seeded batches, schedule, progress, checkpoints,
  exact resume, history, the folder's lock) and the ``Runner`` and ``Task`` protocols;
- :mod:`~mobilenet.training.config`: ``TrainConfig`` and the ``pretrain`` defaults;
- :mod:`~mobilenet.training.classify`: the classification task (training, pretraining, ArcFace),
  ``run``, ``load_trained``;
- :mod:`~mobilenet.training.numpy_runner`, :mod:`~mobilenet.training.torch_runner`: the NumPy
  model (numpy or numba backend) and the torch model with their optimisers.

Detection's task and runners live in :mod:`mobilenet.detection`; ``mobilenet.backends`` names
each backend's runner modules.
"""
