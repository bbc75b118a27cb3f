"""Billing as a user of the official ``openai`` SDK sees it.

The mock upstream reports ``PROMPT_TOKENS`` prompt tokens (``CACHED_TOKENS``
of them cached) and one completion token per word of its echo answer; the
expected cost of each request is worked out here with ``Decimal`` from
those numbers and compared, exactly, with what tollgate bills
(``/api/usage``, ``/admin/usage``, ``/metrics``).
"""

from __future__ import annotations

import json
import time
import urllib.request
from decimal import Decimal
from typing import Iterator

import openai
import pytest

from harness import sha256_hex
from mock_openai import CACHED_TOKENS, PROMPT_TOKENS, MockOpenAI


def get(url: str, bearer: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if bearer:
        req.add_header("authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()

KEY = "sk-e2e-billing"
RATIO = Decimal("0.8")
PRICE_IN = Decimal("2.50")
PRICE_OUT = Decimal("10.00")
PRICE_CACHED = Decimal("1.25")
BUDGET = Decimal("1")


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "std"
ratio = {RATIO}

[[models]]
name = "gpt-4o"
input = {PRICE_IN}
output = {PRICE_OUT}
cached_input = {PRICE_CACHED}

[[channels]]
name = "mock-openai"
type = "openai"
base_url = "{base_url}"
api_key = "sk-upstream"
groups = ["std"]
models = ["gpt-4o"]

[[users]]
name = "carol"

[[keys]]
name = "billing"
user = "carol"
key_sha256 = "{sha256_hex(KEY)}"
groups = ["std"]
budget_usd = {BUDGET}
"""


def nano_usd(completion_tokens: int) -> int:
    """Cost of one mock answer in nano-USD; cached tokens are part of
    ``prompt_tokens`` and billed once, at the cached price."""
    per_million = (
        (PROMPT_TOKENS - CACHED_TOKENS) * PRICE_IN
        + CACHED_TOKENS * PRICE_CACHED
        + completion_tokens * PRICE_OUT
    )
    usd = RATIO * per_million / Decimal(1_000_000)
    nanos = usd * Decimal(1_000_000_000)
    assert nanos == nanos.to_integral_value(), "these prices need no rounding"
    return int(nanos)


@pytest.fixture
def stack(start_tollgate) -> Iterator[tuple]:
    mock = MockOpenAI().start()
    try:
        tollgate = start_tollgate(config(mock.base_url))
        client = openai.OpenAI(
            base_url=tollgate.url("/v1"), api_key=KEY, max_retries=0, timeout=20
        )
        yield tollgate, mock, client
        client.close()
    finally:
        mock.stop()


def my_usage(tollgate, requests: int) -> dict:
    """``/api/usage`` once it counts ``requests`` requests: a request is
    billed just after its last byte went out, so the client may be a moment
    ahead of its bill (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = get(tollgate.url("/api/usage"), KEY)
        assert status == 200, body
        usage = json.loads(body)
        if usage["requests"] == requests or time.monotonic() > deadline:
            return usage
        time.sleep(0.02)


def test_non_stream_is_billed_exactly(stack):
    tollgate, _, client = stack
    r = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hi to the gateway"}]
    )
    assert r.usage.completion_tokens == 6
    expected = nano_usd(6)
    assert expected == 85_000

    usage = my_usage(tollgate, 1)
    assert usage["spent_nano_usd"] == expected
    assert usage["requests"] == 1
    assert usage["tokens"]["input"] == PROMPT_TOKENS - CACHED_TOKENS
    assert usage["tokens"]["cached_input"] == CACHED_TOKENS
    assert usage["tokens"]["output"] == 6
    assert usage["remaining_nano_usd"] == int(BUDGET * 1_000_000_000) - expected
    assert usage["user"]["spent_nano_usd"] == expected


def test_streams_are_billed_exactly_with_and_without_a_usage_request(stack):
    tollgate, mock, client = stack
    plain = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
        )
    )
    # Not asked for: no usage reaches the SDK, yet upstream was asked.
    assert all(c.usage is None for c in plain)
    assert mock.last().json()["stream_options"] == {"include_usage": True}

    asked = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "four five"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert asked[-1].usage.completion_tokens == 3
    assert [c for c in asked if c.usage is not None] == [asked[-1]]

    # "echo: one two three" = 4 words, "echo: four five" = 3 words.
    expected = nano_usd(4) + nano_usd(3)
    assert my_usage(tollgate, 2)["spent_nano_usd"] == expected

    ledger = json.loads(get(tollgate.admin_url("/admin/usage?group_by=group,model"))[1])
    assert ledger["rows"] == [
        {
            "group": "std",
            "model": "gpt-4o",
            "requests": 2,
            "input": 2 * (PROMPT_TOKENS - CACHED_TOKENS),
            "output": 7,
            "cached_input": 2 * CACHED_TOKENS,
            "cache_write": 0,
            "cache_write_1h": 0,
            "estimated": 0,
            "cost_usd": float(Decimal(expected) / Decimal(1_000_000_000)),
            "cost_nano_usd": expected,
        }
    ]
    metrics = get(tollgate.admin_url("/metrics"))[1].decode()
    line = 'tollgate_spend_nano_usd_total{group="std",model="gpt-4o"}'
    assert f"{line} {expected}" in metrics.splitlines()


def test_budget_exhausted_is_insufficient_quota_for_the_sdk(start_tollgate):
    mock = MockOpenAI().start()
    try:
        # A budget smaller than one answer: the first request is admitted
        # (nothing spent yet) and the next one is refused.
        tollgate = start_tollgate(
            config(mock.base_url).replace(f"budget_usd = {BUDGET}", "budget_usd = 0.00001")
        )
        client = openai.OpenAI(
            base_url=tollgate.url("/v1"), api_key=KEY, max_retries=0, timeout=20
        )
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        my_usage(tollgate, 1)  # billed
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        assert err.value.status_code == 429
        assert err.value.code == "insufficient_quota"
        assert err.value.body["type"] == "insufficient_quota"
        assert my_usage(tollgate, 1)["remaining_nano_usd"] == 0
    finally:
        mock.stop()
