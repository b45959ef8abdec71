# meerkat_rt.fast: allocation-free byte and sample loops for the audio hot path.
#
# The viper versions (_fast_viper) run where MicroPython has the viper emitter; everywhere else
# (CPython, builds without native code) the pure-Python twins (_fast_py) take over. Both export
# the same functions with the same signatures; host tests check that they agree.
try:
    from ._fast_viper import (
        b64_decode,
        b64_encode,
        copy,
        equal,
        highpass,
        mask_copy,
        mean_abs,
        mix,
        s32_to_s16,
        scale,
    )

    IMPLEMENTATION = "viper"
except (ImportError, SyntaxError, ValueError):  # no micropython module / no emitter / wrong .mpy arch
    from ._fast_py import (  # noqa: F401
        b64_decode,
        b64_encode,
        copy,
        equal,
        highpass,
        mask_copy,
        mean_abs,
        mix,
        s32_to_s16,
        scale,
    )

    IMPLEMENTATION = "python"
