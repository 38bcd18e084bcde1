"""Errors a user can act on. The CLI prints their message without a traceback and exits non-zero."""


class EmofusionError(Exception):
    """Base class: the message says what was wrong, with which file or key, and what to do."""


class ConfigError(EmofusionError):
    """A config key is missing, of the wrong type, or points at something that does not exist."""


class InputError(EmofusionError):
    """An input file (video, audio, annotation, manifest) is missing or malformed."""
