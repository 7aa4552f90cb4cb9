"""Int8 MobileNet in NumPy: the affine map and requantization (:mod:`.affine`), calibration
observers (:mod:`.observers`), integer-only ops (:mod:`.ops`) and whole quantized models
(:mod:`.model`)."""
