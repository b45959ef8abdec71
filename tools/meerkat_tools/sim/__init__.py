"""The board simulator: the firmware running as a simulated board (MicroPython unix port or
CPython) against a Meerkat server, driven and observed from the host."""

from .runner import SimDevice, SimError

__all__ = ["SimDevice", "SimError"]
