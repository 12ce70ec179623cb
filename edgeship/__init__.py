"""edgeship: Keras image classifier → quantized TensorFlow Lite → Raspberry Pi."""

__version__ = "0.1.0"
