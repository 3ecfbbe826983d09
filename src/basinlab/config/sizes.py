"""The sweep's grid of training-set sizes ``N`` (SPEC 7): ``sweep.sizes`` as written (a list, ``start:stop[:factor]``
or a mapping) resolved once into a sorted list of ints."""

from __future__ import annotations

from typing import Any

from basinlab.config.coerce import _number, _show
from basinlab.errors import BasinlabError


def geometric_sizes(start: int, stop: int, factor: float = 2.0) -> list[int]:
    """``start, start·f, start·f², ...`` up to ``stop`` inclusive, rounded to integers, e.g. ``2^4 .. 2^15``."""
    if start < 1 or stop < start or factor <= 1:
        raise BasinlabError(f"geometric grid needs 1 <= start <= stop and factor > 1, got {start}, {stop}, {factor}")
    out: list[int] = []
    k = 0
    while True:
        n = int(round(start * factor**k))
        if n > stop * (1 + 1e-9):
            break
        if not out or n != out[-1]:
            out.append(n)
        k += 1
    return out


def resolve_sizes(spec: Any) -> list[int]:
    """The grid of ``sweep.sizes``: a list of ints, ``"16:32768"`` / ``"16:32768:4"`` (geometric, factor 2 or
    given), or a mapping ``{start: 16, stop: 32768, factor: 2}``. Sorted, without duplicates."""
    if isinstance(spec, str):
        parts = spec.split(":")
        nums = [_number(p, int if i < 2 else float, "sweep.sizes") for i, p in enumerate(parts)] if len(parts) in (
            2, 3) else []
        if not nums:
            raise BasinlabError(f"sweep.sizes {_show(spec)} is not 'start:stop' or 'start:stop:factor'")
        sizes = geometric_sizes(int(nums[0]), int(nums[1]), float(nums[2]) if len(nums) == 3 else 2.0)
    elif isinstance(spec, dict):
        if "start" not in spec or "stop" not in spec or set(spec) - {"start", "stop", "factor"}:
            raise BasinlabError("sweep.sizes as a mapping needs 'start' and 'stop' (and optionally 'factor')")
        sizes = geometric_sizes(_number(spec["start"], int, "sweep.sizes.start"),
                                _number(spec["stop"], int, "sweep.sizes.stop"),
                                _number(spec.get("factor", 2.0), float, "sweep.sizes.factor"))
    elif isinstance(spec, (list, tuple)):
        sizes = sorted({_number(n, int, "sweep.sizes") for n in spec})
    elif isinstance(spec, int) and not isinstance(spec, bool):
        sizes = [spec]
    else:
        raise BasinlabError(f"sweep.sizes must be a list, 'start:stop[:factor]' or a mapping, got {_show(spec)}")
    if not sizes or sizes[0] < 1:
        raise BasinlabError(f"sweep.sizes must be positive integers, got {_show(spec)}")
    return sizes
