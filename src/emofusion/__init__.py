"""emofusion: audio-visual(-text) dimensional emotion recognition, from raw videos to a table of CCC results."""

__version__ = "0.1.0"
