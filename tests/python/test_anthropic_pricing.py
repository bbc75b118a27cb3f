"""The pricing rules of SPEC §12 as a user of the official ``anthropic`` SDK
meets them: Anthropic's 5-minute and 1-hour cache writes priced apart, a
long-context request priced at its tier, a user group's own ratio, and a
daily user budget. The mock Anthropic upstream reports
``cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``;
every expected cost is worked out here with ``Decimal`` and compared,
exactly, with the ledger (``/admin/usage``), ``/api/usage``, ``/metrics``
and the access log."""

from __future__ import annotations

import datetime
import json
import time
import urllib.request
from decimal import Decimal

import anthropic
import pytest

from access_log import wait_metered
from harness import sha256_hex
from mock_native import MockNative

pytestmark = pytest.mark.filterwarnings("error:The model .* is deprecated:DeprecationWarning")

MODEL = "claude-sonnet-4-6"
VIP_KEY = "sk-e2e-pricing-vip"
PLAIN_KEY = "sk-e2e-pricing-plain"
# USD per 1M tokens: input, output, cache read, 5-minute write, 1-hour write.
BASE = dict(input=Decimal("3"), output=Decimal("15"), cached_input=Decimal("0.3"),
            cache_write=Decimal("3.75"), cache_write_1h=Decimal("6"))
TIER_ABOVE = 200_000
TIER = dict(input=Decimal("6.0"), output=Decimal("22.5"), cached_input=Decimal("0.6"),
            cache_write=Decimal("7.5"), cache_write_1h=Decimal("12"))
GROUP_RATIO = Decimal("0.5")
VIP_RATIO = Decimal("0.4")


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "claude"
ratio = {GROUP_RATIO}
user_ratios = {{ vip = {VIP_RATIO} }}

[[groups]]
name = "vip"
ratio = 1

[[models]]
name = "{MODEL}"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75
cache_write_1h = 6
tiers = [{{ above_input_tokens = {TIER_ABOVE}, input = 6.0, output = 22.5, cached_input = 0.6, cache_write = 7.5, cache_write_1h = 12 }}]

[[channels]]
name = "anthropic-direct"
type = "anthropic"
base_url = "{base_url}"
api_key = "sk-ant-e2e-upstream"
groups = ["claude"]

[[users]]
name = "bob"
group = "vip"
budget_usd = 100
budget_period = "day"

[[keys]]
name = "e2e-vip"
user = "bob"
key_sha256 = "{sha256_hex(VIP_KEY)}"
groups = ["claude"]

[[keys]]
name = "e2e-plain"
key_sha256 = "{sha256_hex(PLAIN_KEY)}"
groups = ["claude"]
"""


def usage(input_tokens: int, cache_read: int, write_5m: int, write_1h: int) -> dict:
    """The input side of an Anthropic usage report with writes by lifetime;
    ``cache_creation_input_tokens`` is their total, as Anthropic sends it."""
    return {
        "input_tokens": input_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m,
                           "ephemeral_1h_input_tokens": write_1h},
    }


def nano_usd(u: dict, output: int, ratio: Decimal) -> int:
    """Exact cost: the whole request at the tier when its whole input is
    above the threshold, 1-hour writes at their own price, times the ratio,
    rounded once (these figures need no rounding)."""
    by_ttl = u["cache_creation"]
    counts = dict(
        input=u["input_tokens"],
        output=output,
        cached_input=u["cache_read_input_tokens"],
        cache_write=by_ttl["ephemeral_5m_input_tokens"],
        cache_write_1h=by_ttl["ephemeral_1h_input_tokens"],
    )
    whole_input = sum(n for kind, n in counts.items() if kind != "output")
    prices = TIER if whole_input > TIER_ABOVE else BASE
    per_million = sum(Decimal(n) * prices[kind] for kind, n in counts.items())
    nanos = ratio * per_million * 1000
    assert nanos == nanos.to_integral_value()
    return int(nanos)


def get_json(url: str, bearer: str | None = None) -> dict:
    req = urllib.request.Request(url)
    if bearer:
        req.add_header("authorization", f"Bearer {bearer}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def metric(text: str, name: str, **labels: str) -> int:
    """The value of one series, whatever the order of its labels."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(f"{name}{{") and set(series[len(name) + 1:-1].split(",")) == want:
            return int(float(value))
    raise AssertionError(f"no {name} {sorted(want)} in /metrics")


def wait_requests(tollgate, requests: int) -> dict:
    """``/admin/usage`` by key once it counts ``requests`` (billed just after
    the last byte)."""
    deadline = time.monotonic() + 10
    while True:
        v = get_json(tollgate.admin_url("/admin/usage?group_by=key"))
        if v["total"]["requests"] == requests or time.monotonic() > deadline:
            return v
        time.sleep(0.02)


@pytest.fixture
def stack(start_tollgate):
    mock = MockNative().start()
    try:
        yield start_tollgate(config(mock.base_url)), mock
    finally:
        mock.stop()


def client(tollgate, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=tollgate.url(), api_key=key, max_retries=0, timeout=20)


def test_cache_write_lifetimes_tiers_and_user_ratios_agree_everywhere(stack):
    tollgate, mock = stack
    vip, plain = client(tollgate, VIP_KEY), client(tollgate, PLAIN_KEY)

    # 1. bob (user group vip): 5-minute and 1-hour writes, base prices.
    short = usage(1000, 2000, 3000, 4000)
    mock.anthropic_usage = short
    r = vip.messages.create(model=MODEL, max_tokens=64,
                            messages=[{"role": "user", "content": "Hello gateway"}])
    assert r.usage.cache_creation_input_tokens == 7000
    assert r.usage.cache_creation.ephemeral_1h_input_tokens == 4000
    first = nano_usd(short, 3, VIP_RATIO)
    # 0.4 x (1000x3 + 3x15 + 2000x0.3 + 3000x3.75 + 4000x6) = 0.4 x 38,895 per 1M
    assert first == 15_558_000

    # 2. bob, streamed, whole input 150,000 + 40,000 + 5,000 + 5,001 =
    # 200,001 > 200,000: the whole request at the tier. The mock's
    # message_delta repeats the writes' total without their split.
    long = usage(150_000, 40_000, 5000, 5001)
    mock.anthropic_usage = long
    with vip.messages.stream(model=MODEL, max_tokens=64,
                             messages=[{"role": "user", "content": "stream these four words"}]) as s:
        assert "".join(s.text_stream) == "echo: stream these four words"
        final = s.get_final_message()
    assert final.usage.output_tokens == 5
    second = nano_usd(long, 5, VIP_RATIO)
    # 0.4 x (150000x6 + 5x22.5 + 40000x0.6 + 5000x7.5 + 5001x12) = 0.4 x 1,021,624.5
    assert second == 408_649_800

    # 3. A key without a user: the group's own ratio.
    mock.anthropic_usage = short
    plain.messages.create(model=MODEL, max_tokens=64,
                          messages=[{"role": "user", "content": "Hello gateway"}])
    third = nano_usd(short, 3, GROUP_RATIO)
    assert third == 19_447_500

    # The access log: writes by lifetime, nothing counted twice.
    lines = wait_metered(tollgate, 3)
    assert [(m.input, m.cached_input, m.cache_write, m.cache_write_1h, m.output) for m in lines] == [
        (1000, 2000, 3000, 4000, 3),
        (150_000, 40_000, 5000, 5001, 5),
        (1000, 2000, 3000, 4000, 3),
    ]

    # The ledger.
    ledger = wait_requests(tollgate, 3)
    rows = {row["key"]: row for row in ledger["rows"]}
    assert rows["e2e-vip"]["cost_nano_usd"] == first + second
    assert rows["e2e-plain"]["cost_nano_usd"] == third
    assert (rows["e2e-vip"]["cache_write"], rows["e2e-vip"]["cache_write_1h"]) == (8000, 9001)
    assert (rows["e2e-plain"]["cache_write"], rows["e2e-plain"]["cache_write_1h"]) == (3000, 4000)
    assert rows["e2e-vip"]["cached_input"] == 42_000
    assert ledger["total"]["cost_nano_usd"] == first + second + third == 443_655_300
    assert ledger["total"]["cost_usd"] == 0.4436553

    # bob's /api/usage: his key's spend, and his daily budget.
    me = get_json(tollgate.url("/api/usage"), VIP_KEY)
    assert me["spent_nano_usd"] == first + second
    assert me["tokens"]["cache_write"] == 8000
    assert me["tokens"]["cache_write_1h"] == 9001
    assert me["tokens"]["total"] == 1000 + 150_000 + 3 + 5 + 42_000 + 8000 + 9001
    assert me["budget_period"] is None, "the key has no budget of its own"
    bob = me["user"]
    assert bob["budget_period"] == "day"
    assert bob["period_spent_nano_usd"] == first + second
    tomorrow = datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=1)
    assert bob["budget_resets_at"] == f"{tomorrow.isoformat()}T00:00:00Z"
    assert me["remaining_nano_usd"] == 100 * 10**9 - (first + second)

    # /metrics.
    text = tollgate_metrics(tollgate)
    labels = dict(group="claude", model=MODEL)
    assert metric(text, "tollgate_spend_nano_usd_total", **labels) == 443_655_300
    assert metric(text, "tollgate_tokens_total", **labels, kind="cache_write_1h") == 13_001
    assert metric(text, "tollgate_tokens_total", **labels, kind="cache_write") == 11_000
    assert metric(text, "tollgate_tokens_total", **labels, kind="input") == 152_000
    vip.close()
    plain.close()


def test_pricing_lists_tiers_one_hour_writes_and_user_ratios(stack):
    tollgate, _ = stack
    pricing = get_json(tollgate.url("/api/pricing"))
    claude = next(g for g in pricing["groups"] if g["name"] == "claude")
    assert claude["user_ratios"] == {"vip": 0.4}
    model = next(m for m in pricing["models"] if m["name"] == MODEL)
    assert (model["cache_write"], model["cache_write_1h"]) == (3.75, 6.0)
    assert model["tiers"] == [{"above_input_tokens": TIER_ABOVE, "input": 6.0, "output": 22.5,
                               "cached_input": 0.6, "cache_write": 7.5, "cache_write_1h": 12.0}]


def tollgate_metrics(tollgate) -> str:
    with urllib.request.urlopen(tollgate.admin_url("/metrics"), timeout=10) as r:
        return r.read().decode()
