"""Which experiments the pipeline fits mixture laws on, and which experiment scores each."""

from __future__ import annotations

from collections.abc import Iterable

TRAIN_SUFFIX = "-train"
TEST_SUFFIX = "-test"


def held_out_pairs(experiments: Iterable[str]) -> list[tuple[str, str | None]]:
    """Each experiment to fit, with the experiment that scores its laws (or None).

    An ``X-test`` experiment next to an ``X-train`` one (RegMix's split) scores the laws fitted
    on ``X-train`` instead of being fitted itself; every other experiment is fitted and scored
    by nothing. The order of ``experiments`` is kept.

    >>> held_out_pairs(["a", "r-test", "r-train"])
    [('a', None), ('r-train', 'r-test')]
    """
    names = list(experiments)
    present = set(names)
    pairs = []
    for name in names:
        if name.endswith(TEST_SUFFIX) and name.removesuffix(TEST_SUFFIX) + TRAIN_SUFFIX in present:
            continue
        partner = None
        if name.endswith(TRAIN_SUFFIX):
            partner = name.removesuffix(TRAIN_SUFFIX) + TEST_SUFFIX
        pairs.append((name, partner if partner in present else None))
    return pairs
