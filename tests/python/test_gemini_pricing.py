"""A Gemini long-context request as a ``google-genai`` SDK user meets it:
Gemini 2.5 Pro charges more for a prompt above 200,000 tokens, and the
whole request is priced at that tier (SPEC §12). The mock Gemini upstream
reports the prompt side of ``usageMetadata`` the test chooses; the
expected cost is worked out with ``Decimal`` and compared exactly with the
ledger (``/admin/usage``), ``/api/usage`` and ``/metrics``."""

from __future__ import annotations

from decimal import Decimal

import pytest
from google import genai
from google.genai import types as genai_types

from harness import sha256_hex
from mock_native import GEMINI_THOUGHTS, MockNative
from test_anthropic_pricing import get_json, metric, tollgate_metrics, wait_requests

MODEL = "gemini-2.5-pro"
KEY = "sk-e2e-gemini-pricing"
TIER_ABOVE = 200_000
# USD per 1M tokens: input, output, cache read.
BASE = (Decimal("1.25"), Decimal("10"), Decimal("0.31"))
TIER = (Decimal("2.5"), Decimal("15"), Decimal("0.625"))
RATIO = Decimal("0.8")


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "google"
ratio = {RATIO}

[[models]]
name = "{MODEL}"
input = 1.25
output = 10
cached_input = 0.31
tiers = [{{ above_input_tokens = {TIER_ABOVE}, input = 2.5, output = 15, cached_input = 0.625 }}]

[[channels]]
name = "gemini"
type = "gemini"
base_url = "{base_url}"
api_key = "gm-e2e-upstream"
groups = ["google"]
models = ["{MODEL}"]

[[keys]]
name = "gemini-pricing"
key_sha256 = "{sha256_hex(KEY)}"
groups = ["google"]
"""


def nano_usd(prompt: int, cached: int, output: int) -> int:
    """Gemini's promptTokenCount includes the cached tokens; thoughts are
    output. The whole prompt decides the tier."""
    p_in, p_out, p_cached = TIER if prompt > TIER_ABOVE else BASE
    per_million = (prompt - cached) * p_in + cached * p_cached + output * p_out
    nanos = RATIO * per_million * 1000
    assert nanos == nanos.to_integral_value()
    return int(nanos)


@pytest.fixture
def stack(start_tollgate):
    mock = MockNative().start()
    try:
        yield start_tollgate(config(mock.base_url)), mock
    finally:
        mock.stop()


def test_a_long_gemini_prompt_is_priced_at_its_tier_everywhere(stack):
    tollgate, mock = stack
    gem = genai.Client(api_key=KEY, http_options=genai_types.HttpOptions(
        base_url=tollgate.url(), api_version="v1beta", timeout=20_000))
    expected = 0
    for prompt, cached in [(150_000, 20_000), (250_000, 50_000), (200_000, 0)]:
        mock.gemini_prompt = {"promptTokenCount": prompt, "cachedContentTokenCount": cached}
        r = gem.models.generate_content(model=MODEL, contents="long context")
        assert r.text == "echo: long context"
        output = r.usage_metadata.candidates_token_count + GEMINI_THOUGHTS
        expected += nano_usd(prompt, cached, output)
    # 150,000 and exactly 200,000 are not above the threshold; 250,000 is:
    # 0.8 x (130000 x 1.25 + 20000 x 0.31 + 6 x 10) + 0.8 x (200000 x 2.5
    # + 50000 x 0.625 + 6 x 15) + 0.8 x (200000 x 1.25 + 6 x 10)
    assert expected == 135_008_000 + 425_072_000 + 200_048_000
    ledger = wait_requests(tollgate, 3)
    assert ledger["total"]["cost_nano_usd"] == expected
    assert get_json(tollgate.url("/api/usage"), KEY)["spent_nano_usd"] == expected
    assert metric(tollgate_metrics(tollgate), "tollgate_spend_nano_usd_total",
                  group="google", model=MODEL) == expected
