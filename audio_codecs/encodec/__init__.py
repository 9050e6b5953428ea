"""EnCodec (24 kHz mono, 48 kHz joint stereo) behind the codec interface, on transformers."""
