"""The official ``google-genai`` SDK through tollgate to a mock Gemini API
upstream (``type = "gemini"``): generate_content, generate_content_stream,
count_tokens; and to Gemini on a mock Vertex AI (``type = "vertex"``) with a
service-account token minted once at a mock token endpoint.

Checks what the SDK user sees, what the upstream received (the channel's key
in x-goog-api-key, the client's key nowhere, the model from the path mapped),
and the usage metered (cached prompt tokens apart, thoughts counted as
output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google import genai
from google.genai import errors, types

from access_log import spent_nano_usd, wait_metered, wait_spent
from harness import sha256_hex
from mock_native import (
    GEMINI_CACHED,
    GEMINI_COUNT,
    GEMINI_PROMPT,
    GEMINI_THOUGHTS,
    VERTEX_TOKEN,
    MockNative,
)

CLIENT_KEY = "sk-e2e-client-gemini"
CHANNEL_KEY = "AIza-e2e-upstream"
UPSTREAM_MODEL = "gemini-2.5-flash-001"


def config(base_url: str) -> str:
    return f"""
[[groups]]
name = "gemini"
ratio = 1.0

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5
cached_input = 0.075

[[channels]]
name = "gemini-api"
type = "gemini"
base_url = "{base_url}"
api_key = "{CHANNEL_KEY}"
groups = ["gemini"]
model_map = {{ "gemini-2.5-flash" = "{UPSTREAM_MODEL}" }}

[[keys]]
name = "e2e-gemini"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["gemini"]
"""


@pytest.fixture(scope="module")
def stack(start_tollgate_module):
    mock = MockNative().start()
    tollgate = start_tollgate_module(config(mock.base_url))
    yield tollgate, mock
    mock.stop()


def make_client(tollgate, key: str = CLIENT_KEY) -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(base_url=tollgate.url(), api_version="v1beta", timeout=20_000),
    )


@pytest.fixture
def client(stack):
    tollgate, mock = stack
    mock.reset()
    return make_client(tollgate)


def assert_upstream_auth(received) -> None:
    assert received.headers["x-goog-api-key"] == CHANNEL_KEY
    assert "key=" not in received.path
    for name, value in received.headers.items():
        assert CLIENT_KEY not in value, f"client key leaked upstream in {name}"


def test_generate_content(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    spent_before = spent_nano_usd(tollgate, CLIENT_KEY)
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Hello gateway")
    assert r.text == "echo: Hello gateway"
    assert r.usage_metadata.prompt_token_count == GEMINI_PROMPT
    got = mock.last()
    assert got.path == f"/v1beta/models/{UPSTREAM_MODEL}:generateContent"
    assert got.json()["contents"][0]["parts"][0]["text"] == "Hello gateway"
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.cache_write, m.estimated) == (
        GEMINI_PROMPT - GEMINI_CACHED,
        3 + GEMINI_THOUGHTS,
        GEMINI_CACHED,
        0,
        False,
    )
    assert (m.model, m.channel) == ("gemini-2.5-flash", "gemini-api")
    # ratio 1 x (30 uncached x $0.30 + 6 output (3 + 3 thoughts) x $2.50
    # + 10 cached x $0.075) per 1M tokens = $0.00002475
    expected = 30 * 300 + 6 * 2500 + 10 * 75
    assert expected == 24_750
    assert wait_spent(tollgate, CLIENT_KEY, spent_before + expected) == spent_before + expected


def test_generate_content_stream(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    spent_before = spent_nano_usd(tollgate, CLIENT_KEY)
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="stream these four words"
        )
    )
    assert len(chunks) == 5
    assert "".join(c.text for c in chunks) == "echo: stream these four words"
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    got = mock.last()
    assert got.path == f"/v1beta/models/{UPSTREAM_MODEL}:streamGenerateContent?alt=sse"
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input, m.estimated) == (
        GEMINI_PROMPT - GEMINI_CACHED,
        5 + GEMINI_THOUGHTS,
        GEMINI_CACHED,
        False,
    )
    # ratio 1 x (30 x $0.30 + 8 output (5 + 3 thoughts) x $2.50 + 10 x $0.075) per 1M
    expected = 30 * 300 + 8 * 2500 + 10 * 75
    assert expected == 29_750
    assert wait_spent(tollgate, CLIENT_KEY, spent_before + expected) == spent_before + expected


def test_count_tokens(client, stack):
    tollgate, mock = stack
    before = len(wait_metered(tollgate, 0))
    r = client.models.count_tokens(model="gemini-2.5-flash", contents="count me")
    assert r.total_tokens == GEMINI_COUNT
    got = mock.last()
    assert got.path == f"/v1beta/models/{UPSTREAM_MODEL}:countTokens"
    assert_upstream_auth(got)
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.output, m.cached_input) == (0, 0, 0), "counting is free"


def test_errors_are_gemini_shaped(client, stack):
    tollgate, mock = stack
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model="gemini-nope", contents="x")
    assert e.value.code == 404
    assert e.value.status == "NOT_FOUND"
    wrong_key = make_client(tollgate, "sk-wrong")
    with pytest.raises(errors.ClientError) as e:
        wrong_key.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert e.value.code == 401
    assert e.value.status == "UNAUTHENTICATED"
    assert mock.requests == [], "refused before any upstream work"


# -- Gemini on Vertex AI ---------------------------------------------------------

KEY_PEM = (Path(__file__).resolve().parents[1] / "data" / "vertex-test-key.pem").read_text()


def vertex_config(base_url: str) -> str:
    account = json.dumps(
        {
            "type": "service_account",
            "project_id": "e2e-project",
            "private_key_id": "e2e",
            "private_key": KEY_PEM,
            "client_email": "e2e@e2e-project.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
    return f"""
[[groups]]
name = "gemini-vertex"
ratio = 0.8

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5
cached_input = 0.075

[[channels]]
name = "gemini-vertex"
type = "vertex"
base_url = "{base_url}"
location = "us-central1"
token_uri = "{base_url}/token"
credentials_json = '''{account}'''
groups = ["gemini-vertex"]

[[keys]]
name = "e2e-vertex"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["gemini-vertex"]
"""


@pytest.fixture(scope="module")
def vertex_stack(start_tollgate_module):
    mock = MockNative().start()
    tollgate = start_tollgate_module(vertex_config(mock.base_url))
    yield tollgate, mock
    mock.stop()


def test_vertex_generate_and_stream(vertex_stack):
    tollgate, mock = vertex_stack
    client = make_client(tollgate)
    r = client.models.generate_content(model="gemini-2.5-flash", contents="Hello Vertex")
    assert r.text == "echo: Hello Vertex"
    chunks = list(
        client.models.generate_content_stream(model="gemini-2.5-flash", contents="two words")
    )
    assert "".join(c.text for c in chunks) == "echo: two words"
    calls = [r for r in mock.requests if r.path != "/token"]
    prefix = "/v1/projects/e2e-project/locations/us-central1/publishers/google/models"
    assert [c.path for c in calls] == [
        f"{prefix}/gemini-2.5-flash:generateContent",
        f"{prefix}/gemini-2.5-flash:streamGenerateContent?alt=sse",
    ]
    for c in calls:
        assert c.headers["authorization"] == f"Bearer {VERTEX_TOKEN}"
        assert "x-goog-api-key" not in c.headers
    tokens = [r for r in mock.requests if r.path == "/token"]
    assert len(tokens) == 1, "one token minted, then cached"
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in tokens[0].body
    m = wait_metered(tollgate, 2)
    assert [(x.input, x.output, x.cached_input) for x in m] == [
        (GEMINI_PROMPT - GEMINI_CACHED, 3 + GEMINI_THOUGHTS, GEMINI_CACHED),
        (GEMINI_PROMPT - GEMINI_CACHED, 3 + GEMINI_THOUGHTS, GEMINI_CACHED),
    ]
