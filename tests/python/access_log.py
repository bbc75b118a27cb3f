"""Reads tollgate's access log (the ``request`` lines) to see the usage it
metered for each request: tokens by kind and whether they were estimated."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Metered:
    input: int
    output: int
    cached_input: int
    cache_write: int
    estimated: bool
    model: str
    channel: str


def metered(tollgate) -> list[Metered]:
    out = []
    for line in tollgate.log().splitlines():
        if " request " not in line or " status=" not in line:
            continue
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        fields = {k: v.strip('"') for k, v in fields.items()}
        out.append(
            Metered(
                input=int(fields["input"]),
                output=int(fields["output"]),
                cached_input=int(fields["cached_input"]),
                cache_write=int(fields["cache_write"]),
                estimated=fields["estimated"] == "true",
                model=fields["model"],
                channel=fields["channel"],
            )
        )
    return out


def wait_metered(tollgate, count: int, timeout: float = 5.0) -> list[Metered]:
    """The first ``count`` metered requests (the line follows the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = metered(tollgate)
        if len(got) >= count or time.monotonic() > deadline:
            assert len(got) >= count, f"only {len(got)} request lines; log:\n{tollgate.log()}"
            return got
        time.sleep(0.02)
