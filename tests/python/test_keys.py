"""Managed keys as a user sees them: she signs in with her user token,
creates a key through ``/api/keys`` choosing a group, and uses it with the
official ``openai`` SDK against a loopback OpenAI upstream; the requests
are billed to the group she chose, exactly (``/api/usage``,
``/admin/usage``), and revoking the key stops it at once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Iterator

import openai
import pytest

from harness import remember_secret, sha256_hex
from mock_openai import CACHED_TOKENS, PROMPT_TOKENS, MockOpenAI

USER_TOKEN = "ut-e2e-alice-0123456789"
PRICE_IN = Decimal("2.50")
PRICE_OUT = Decimal("10.00")
PRICE_CACHED = Decimal("1.25")
CHEAP_RATIO = Decimal("0.5")


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "std"
ratio = 1

[[groups]]
name = "cheap"
ratio = {CHEAP_RATIO}
selectable = true

[[models]]
name = "gpt-4o"
input = {PRICE_IN}
output = {PRICE_OUT}
cached_input = {PRICE_CACHED}

[[channels]]
name = "mock-openai"
type = "openai"
base_url = "{base_url}"
api_key = "sk-upstream-keys"
groups = ["std", "cheap"]
models = ["gpt-4o"]

[[users]]
name = "alice"
group = "std"
token_sha256 = "{sha256_hex(USER_TOKEN)}"
"""


def call(
    url: str,
    method: str = "GET",
    body: dict | None = None,
    bearer: str | None = None,
    cookie: str | None = None,
) -> tuple[int, dict, object]:
    """One request; the status, the JSON body ({} when empty) and headers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if bearer:
        req.add_header("authorization", f"Bearer {bearer}")
    if cookie:
        req.add_header("cookie", cookie)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
            return r.status, json.loads(text) if text else {}, r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), e.headers


def nano_usd(completion_tokens: int, ratio: Decimal) -> int:
    per_million = (
        (PROMPT_TOKENS - CACHED_TOKENS) * PRICE_IN
        + CACHED_TOKENS * PRICE_CACHED
        + completion_tokens * PRICE_OUT
    )
    nanos = ratio * per_million / Decimal(1_000_000) * Decimal(1_000_000_000)
    assert nanos == nanos.to_integral_value()
    return int(nanos)


@pytest.fixture
def tollgate(start_tollgate) -> Iterator:
    mock = MockOpenAI().start()
    try:
        yield start_tollgate(config(mock.base_url))
    finally:
        mock.stop()


def usage_of(tollgate, key: str, requests: int) -> dict:
    """``/api/usage`` of ``key`` once it counts ``requests`` (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        status, usage, _ = call(tollgate.url("/api/usage"), bearer=key)
        assert status == 200, usage
        if usage["requests"] == requests or time.monotonic() > deadline:
            return usage
        time.sleep(0.02)


def test_a_key_created_in_the_user_api_works_with_the_openai_sdk_in_its_group(tollgate):
    # Sign in as the console does: the token for a session cookie.
    status, who, headers = call(
        tollgate.url("/api/session"), "POST", {"token": USER_TOKEN}
    )
    assert (status, who) == (200, {"user": "alice"})
    cookie = headers["Set-Cookie"].split(";")[0]
    remember_secret(cookie.split("=", 1)[1])
    status, session, _ = call(tollgate.url("/api/session"), cookie=cookie)
    assert session["groups"] == ["std", "cheap"]

    status, created, headers = call(
        tollgate.url("/api/keys"), "POST", {"name": "sdk", "groups": ["cheap"]}, cookie=cookie
    )
    assert status == 201, created
    assert headers["Cache-Control"] == "no-store"
    key = created["key"]
    remember_secret(key)
    assert created["groups"] == ["cheap"] and created["hint"] == key[-4:]

    client = openai.OpenAI(base_url=tollgate.url("/v1"), api_key=key, max_retries=0, timeout=20)
    r = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hi to the gateway"}]
    )
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed = [c for c in stream if c.usage is not None][-1].usage.completion_tokens
    expected = nano_usd(r.usage.completion_tokens, CHEAP_RATIO) + nano_usd(streamed, CHEAP_RATIO)

    usage = usage_of(tollgate, key, 2)
    assert usage["key"] == "sdk"
    assert usage["spent_nano_usd"] == expected
    with urllib.request.urlopen(
        tollgate.admin_url("/admin/usage?group_by=group,key&key=sdk"), timeout=10
    ) as resp:
        rows = json.loads(resp.read())["rows"]
    assert [(row["group"], row["key"], row["cost_nano_usd"]) for row in rows] == [
        ("cheap", "sdk", expected)
    ]
    status, listed, _ = call(tollgate.url("/api/keys"), bearer=USER_TOKEN)
    assert [(k["name"], k["spent_nano_usd"]) for k in listed["data"]] == [("sdk", expected)]

    # Revoked through the console: the SDK's next call is refused.
    status, _, _ = call(tollgate.url("/api/keys/sdk"), "DELETE", {}, cookie=cookie)
    assert status == 204
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "still there?"}]
        )
    assert refused.value.code == "invalid_api_key"
    client.close()


def test_a_group_she_may_not_pick_is_refused_in_the_openai_error_shape(tollgate):
    status, body, _ = call(
        tollgate.url("/api/keys"), "POST", {"name": "x", "groups": ["vip"]}, bearer=USER_TOKEN
    )
    assert status == 403
    assert body["error"]["code"] == "group_not_allowed"
    assert body["error"]["type"] == "permission_error"
    assert "you may pick [\"std\", \"cheap\"]" in body["error"]["message"]
