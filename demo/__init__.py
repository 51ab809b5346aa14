"""The demo lab: the tiny models that `make demo` and the suite train on the CPU (not shipped in the wheel).

models.py builds and caches them, data.py holds their images and captions, training.py the training loops.
"""
