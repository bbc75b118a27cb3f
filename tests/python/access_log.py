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
    cache_write_1h: int = 0


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
                cache_write_1h=int(fields.get("cache_write_1h", 0)),
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


def spent_nano_usd(tollgate, key: str) -> int:
    """What the key has spent so far, from ``/api/usage``."""
    import json
    import urllib.request

    req = urllib.request.Request(tollgate.url("/api/usage"), headers={"authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["spent_nano_usd"]


def wait_spent(tollgate, key: str, at_least: int, timeout: float = 5.0) -> int:
    """The key's spend once it reaches ``at_least`` (a request is billed just
    after its last byte, so the client may be a moment ahead of its bill)."""
    deadline = time.monotonic() + timeout
    while True:
        spent = spent_nano_usd(tollgate, key)
        if spent >= at_least or time.monotonic() > deadline:
            return spent
        time.sleep(0.02)
