"""Object detection with SSDLite on a MobileNetV2 backbone (the V2 paper's detector).

- :mod:`~mobilenet.detection.config`: ``DetectConfig`` and the seeded detector;
- :mod:`~mobilenet.detection.train`: the detection task of the one training loop (batches of
  matched targets, the SSD loss, mAP), ``run``, ``load_trained``;
- :mod:`~mobilenet.detection.numpy_runner`, :mod:`~mobilenet.detection.torch_runner`: the
  detector and its optimiser per model kind;
- :mod:`~mobilenet.detection.predict`: boxes from the heads' outputs, detections of images, drawings;
- :mod:`~mobilenet.detection.coco`: mAP by pycocotools.

The layers and the loss are in ``numpy_impl.detector``, ``numpy_impl.detection`` and
``numpy_impl.boxes``; the generated scenes in :mod:`mobilenet.data.scenes`.
"""
