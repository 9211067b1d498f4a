"""Artveil engine: Qt-free protection, purification, metrics and evaluation.

Units at the boundary: strengths and step sizes are in pixel levels (0-255 scale);
image arrays crossing the API are uint8 HxWxC numpy arrays; tensors inside are in [0, 1].
"""

__version__ = "0.1.0"
