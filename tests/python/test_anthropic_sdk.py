"""The official ``anthropic`` SDK through tollgate to a mock Anthropic
upstream (``type = "anthropic"``): messages, streaming, count_tokens; and to
Claude on a mock Bedrock (``type = "bedrock"``), whose AWS event stream the
SDK must receive as ordinary Anthropic SSE.

Each test checks what the SDK user sees, what the upstream received (the
channel's key, never the client's; the mapped model name; the SDK's
anthropic-version), and the usage tollgate metered for billing
(cache reads and writes kept apart from input)."""

from __future__ import annotations

import anthropic
import pytest

from access_log import spent_nano_usd, wait_spent, Metered, wait_metered
from harness import sha256_hex
from mock_native import (
    ANTHROPIC_CACHE_READ,
    ANTHROPIC_CACHE_WRITE,
    ANTHROPIC_COUNT,
    ANTHROPIC_INPUT,
    MockNative,
)

# The SDK warns (DeprecationWarning) for a model past or near its end of
# life: every model these tests name must be current.
pytestmark = pytest.mark.filterwarnings("error:The model .* is deprecated:DeprecationWarning")

CLIENT_KEY = "sk-e2e-client-anthropic"
CHANNEL_KEY = "sk-ant-e2e-upstream"
MODEL = "claude-sonnet-4-6"


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "claude"
ratio = 0.5

[[models]]
name = "{MODEL}"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75

[[channels]]
name = "anthropic-direct"
type = "anthropic"
base_url = "{base_url}"
api_key = "{CHANNEL_KEY}"
groups = ["claude"]

[[keys]]
name = "e2e-anthropic"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["claude"]
"""


@pytest.fixture(scope="module")
def stack(start_tollgate_module):
    mock = MockNative().start()
    tollgate = start_tollgate_module(config(mock.base_url))
    yield tollgate, mock
    mock.stop()


@pytest.fixture
def client(stack):
    tollgate, mock = stack
    mock.reset()
    c = anthropic.Anthropic(base_url=tollgate.url(), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    yield c
    c.close()


def assert_upstream_auth(received) -> None:
    assert received.headers["x-api-key"] == CHANNEL_KEY
    assert "authorization" not in received.headers
    for name, value in received.headers.items():
        assert CLIENT_KEY not in value, f"client key leaked upstream in {name}"
    assert received.headers["anthropic-version"], "the SDK's API version passes through"


def test_messages(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    spent_before = spent_nano_usd(tollgate, CLIENT_KEY)
    r = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Hello gateway"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert r.content[0].text == "echo: Hello gateway"
    assert r.usage.input_tokens == ANTHROPIC_INPUT
    assert r.usage.cache_read_input_tokens == ANTHROPIC_CACHE_READ
    got = mock.last()
    assert got.path == "/v1/messages"
    assert got.json()["model"] == MODEL, "no model_map: the name goes upstream as is"
    assert got.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert m == Metered(
        input=ANTHROPIC_INPUT,
        output=3,
        cached_input=ANTHROPIC_CACHE_READ,
        cache_write=ANTHROPIC_CACHE_WRITE,
        estimated=False,
        model=MODEL,
        channel="anthropic-direct",
    )
    # ratio 0.5 x (30 x $3 + 3 x $15 + 200 cache reads x $0.30 + 50 cache
    # writes x $3.75) per 1M tokens = $0.00019125
    expected = (30 * 3000 + 3 * 15000 + 200 * 300 + 50 * 3750) // 2
    assert expected == 191_250
    assert wait_spent(tollgate, CLIENT_KEY, spent_before + expected) == spent_before + expected


def test_messages_stream(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    spent_before = spent_nano_usd(tollgate, CLIENT_KEY)
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "stream these four words"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream these four words"
    assert final.usage.output_tokens == 5
    assert final.usage.cache_creation_input_tokens == ANTHROPIC_CACHE_WRITE
    got = mock.last()
    assert got.json()["stream"] is True
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.cache_write, m.estimated) == (
        ANTHROPIC_INPUT,
        5,
        ANTHROPIC_CACHE_READ,
        ANTHROPIC_CACHE_WRITE,
        False,
    )
    # ratio 0.5 x (30 x $3 + 5 x $15 + 200 x $0.30 + 50 x $3.75) per 1M tokens
    expected = (30 * 3000 + 5 * 15000 + 200 * 300 + 50 * 3750) // 2
    assert expected == 206_250
    assert wait_spent(tollgate, CLIENT_KEY, spent_before + expected) == spent_before + expected


def test_count_tokens(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    r = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "count me"}]
    )
    assert r.input_tokens == ANTHROPIC_COUNT
    got = mock.last()
    assert got.path == "/v1/messages/count_tokens"
    assert got.json()["model"] == MODEL, "no model_map: the name goes upstream as is"
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.cache_write) == (0, 0, 0, 0), "counting is free"


def test_errors_are_anthropic_shaped(client, stack):
    _, mock = stack
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(
            model="claude-nope", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    bad = anthropic.Anthropic(
        base_url=client.base_url, api_key="sk-wrong", max_retries=0, timeout=20
    )
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert mock.requests == [], "refused before any upstream work"


# -- Claude on AWS Bedrock -----------------------------------------------------

BEDROCK_MODEL_ID = "us.anthropic.claude-sonnet-4-6"


def bedrock_config(base_url: str) -> str:
    return f"""
[[groups]]
name = "claude-aws"
ratio = 1.0

[[models]]
name = "{MODEL}"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75

[[channels]]
name = "claude-bedrock"
type = "bedrock"
base_url = "{base_url}"
region = "us-west-2"
aws_access_key_id = "AKIDE2E"
aws_secret_access_key = "e2e-secret-access-key"
groups = ["claude-aws"]
model_map = {{ "{MODEL}" = "{BEDROCK_MODEL_ID}" }}

[[keys]]
name = "e2e-bedrock"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["claude-aws"]
"""


@pytest.fixture(scope="module")
def bedrock_stack(start_tollgate_module):
    mock = MockNative().start()
    tollgate = start_tollgate_module(bedrock_config(mock.base_url))
    yield tollgate, mock
    mock.stop()


@pytest.fixture
def bedrock_client(bedrock_stack):
    tollgate, mock = bedrock_stack
    mock.reset()
    c = anthropic.Anthropic(base_url=tollgate.url(), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    yield c
    c.close()


def assert_sigv4(received) -> None:
    auth = received.headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDE2E/")
    assert "/us-west-2/bedrock/aws4_request" in auth
    assert "x-amz-date" in received.headers
    for value in received.headers.values():
        assert CLIENT_KEY not in value and "e2e-secret-access-key" not in value


def test_bedrock_messages(bedrock_client, bedrock_stack):
    tollgate, mock = bedrock_stack
    before = len(wait_metered(tollgate, 0))
    r = bedrock_client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "Hello Bedrock"}],
    )
    assert r.content[0].text == "echo: Hello Bedrock"
    got = mock.last()
    assert got.path == "/model/us.anthropic.claude-sonnet-4-6/invoke"
    body = got.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in body and "stream" not in body
    assert_sigv4(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.cache_write, m.channel) == (
        ANTHROPIC_INPUT,
        3,
        ANTHROPIC_CACHE_READ,
        ANTHROPIC_CACHE_WRITE,
        "claude-bedrock",
    )


def test_bedrock_messages_stream(bedrock_client, bedrock_stack):
    """The AWS event stream reaches the SDK as the Anthropic SSE it parses."""
    tollgate, mock = bedrock_stack
    before = len(wait_metered(tollgate, 0))
    with bedrock_client.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "stream from the cloud"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream from the cloud"
    assert final.usage.output_tokens == 5
    assert final.stop_reason == "end_turn"
    got = mock.last()
    assert got.path.endswith("/invoke-with-response-stream")
    assert got.headers["accept"] == "application/vnd.amazon.eventstream"
    assert_sigv4(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.cache_write, m.estimated) == (
        ANTHROPIC_INPUT,
        5,
        ANTHROPIC_CACHE_READ,
        ANTHROPIC_CACHE_WRITE,
        False,
    )
