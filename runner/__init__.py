"""convlab: a configuration-driven experiment runner for convolutional networks."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) buries the run's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
