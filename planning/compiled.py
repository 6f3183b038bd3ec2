"""The decorator of mixplan's numba-compiled loops (the mixture planner's kernels)."""

from __future__ import annotations

from numba import njit


def compiled(function=None, *, nogil: bool = False):
    """``function`` compiled by numba on its first call, the machine code cached on disk
    (beside the module, else in the user's cache directory); compiled per process where
    neither is writable (numba then has no place for its cache). ``nogil`` releases the GIL
    while it runs (a loop that other Python threads should run beside)."""

    def decorate(function):
        try:
            return njit(cache=True, nogil=nogil)(function)
        except RuntimeError:
            return njit(nogil=nogil)(function)

    return decorate if function is None else decorate(function)
