"""Images, audio, moderation and rerank (SPEC §13) through tollgate with the
official SDKs: ``openai`` (images.generate, images.edit,
audio.transcriptions / translations, audio.speech, moderations) against
``mock_openai`` speaking OpenAI's wire format, and ``google-genai`` image
generation through a Gemini channel (``mock_native``).

Every cost is worked out here with ``Decimal`` from the mock's numbers and
compared exactly, in nano-USD, with what the key was billed
(``/api/usage``); ``/admin/usage`` shows the media units in the ledger.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.error
import urllib.request
from decimal import Decimal

import openai
import pytest
from google import genai
from google.genai import types

from access_log import spent_nano_usd, wait_spent
from harness import sha256_hex
from mock_native import GEMINI_IMAGE_TEXT_TOKENS, GEMINI_IMAGE_TOKENS, GEMINI_PROMPT, MockNative
from mock_openai import (
    IMAGE_INPUT_TOKENS,
    IMAGE_OUTPUT_TOKENS,
    IMAGE_TEXT_TOKENS,
    PNG,
    RERANK_TOKENS,
    TRANSCRIPT,
    MockOpenAI,
)

RATIO = Decimal("0.8")
MAX_BODY = 2_000_000
KEYS = ["images", "dalle", "audio", "speech", "moderation", "rerank", "errors", "gemini", "translated"]
NO_RERANK_KEY = "sk-e2e-media-norerank"


def secret(name: str) -> str:
    return f"sk-e2e-media-{name}"


def config(openai_url: str, gemini_url: str) -> str:
    keys = "".join(
        f'\n[[keys]]\nname = "{k}"\nkey_sha256 = "{sha256_hex(secret(k))}"\ngroups = ["media"]\n'
        for k in KEYS
    )
    return f"""max_body_bytes = {MAX_BODY}

[[groups]]
name = "media"
ratio = {RATIO}

[[groups]]
name = "plain"
ratio = 1

[[models]]
name = "gpt-image-1"
input = 5
image_input = 10
output = 40
per_image = {{ "1024x1024" = 0.011, "1024x1536/high" = 0.25, "auto" = 0.011 }}

[[models]]
name = "dall-e-3"
per_image = {{ "1024x1024" = 0.04, "1024x1792/hd" = 0.12 }}

[[models]]
name = "whisper-1"
per_second = 0.0001

[[models]]
name = "tts-1"
per_1k_chars = 0.015

[[models]]
name = "omni-moderation-latest"
per_request = 0.0001

[[models]]
name = "jina-reranker-v2"
input = 0.02

[[models]]
name = "gemini-2.5-flash-image"
input = 0.3
output = 2.5
image_output = 30

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5

[[models]]
name = "imagen-4.0-generate-001"
per_image = {{ "1024x1024" = 0.04 }}

[[channels]]
name = "openai-a"
type = "openai"
base_url = "{openai_url}"
api_key = "sk-e2e-media-upstream"
groups = ["media"]
models = ["gpt-image-1", "dall-e-3", "whisper-1", "tts-1", "omni-moderation-latest", "jina-reranker-v2"]
rerank = true
priority = 10

[[channels]]
name = "openai-b"
type = "openai"
base_url = "{openai_url}"
api_key = "sk-e2e-media-upstream"
groups = ["media", "plain"]
models = ["gpt-image-1", "jina-reranker-v2"]
priority = 5

[[channels]]
name = "gemini"
type = "gemini"
base_url = "{gemini_url}"
api_key = "AIza-e2e-media-upstream"
groups = ["media"]
models = ["gemini-2.5-flash-image", "gemini-2.5-flash", "imagen-4.0-generate-001"]
{keys}
[[keys]]
name = "norerank"
key_sha256 = "{sha256_hex(NO_RERANK_KEY)}"
groups = ["plain"]
"""


@pytest.fixture(scope="module")
def stack(start_tollgate_module):
    mock = MockOpenAI().start()
    native = MockNative().start()
    tollgate = start_tollgate_module(config(mock.base_url, native.base_url))
    yield tollgate, mock, native
    mock.stop()
    native.stop()


@pytest.fixture
def gateway(stack):
    tollgate, mock, _ = stack
    mock.reset()
    return tollgate, mock


def client(tollgate, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=tollgate.url("/v1"), api_key=secret(key), max_retries=0, timeout=30)


def nanos(usd: Decimal) -> int:
    """USD (already times the ratio) in nano-USD, rounded once half to even."""
    return int((usd * Decimal(1_000_000_000)).quantize(Decimal(1), rounding="ROUND_HALF_EVEN"))


def billed(tollgate, key: str, expected: int) -> int:
    got = wait_spent(tollgate, secret(key), expected)
    return got


def admin_row(tollgate, key: str) -> dict:
    with urllib.request.urlopen(tollgate.admin_url(f"/admin/usage?key={key}"), timeout=10) as r:
        return json.loads(r.read())["total"]


def wav(seconds: Decimal) -> bytes:
    samples = int(seconds * 16_000)
    data = samples * 2
    header = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16
    ) + b"data" + struct.pack("<I", data)
    return header + bytes(data)


def test_images_generate_bills_size_quality_and_image_tokens(gateway):
    tollgate, mock = gateway
    with client(tollgate, "images") as c:
        result = c.images.generate(
            model="gpt-image-1", prompt="a lighthouse", size="1024x1536", quality="high", n=2
        )
    assert len(result.data) == 2
    assert base64.b64decode(result.data[0].b64_json) == PNG
    assert result.usage.output_tokens == 2 * IMAGE_OUTPUT_TOKENS
    assert mock.last().path == "/v1/images/generations"
    assert mock.last().headers["authorization"] == "Bearer sk-e2e-media-upstream"
    per_million = IMAGE_TEXT_TOKENS * Decimal(5) + 2 * IMAGE_OUTPUT_TOKENS * Decimal(40)
    usd = RATIO * (per_million / Decimal(1_000_000) + 2 * Decimal("0.25"))
    assert billed(tollgate, "images", nanos(usd)) == nanos(usd) == 467_732_000
    row = admin_row(tollgate, "images")
    assert (row["images"], row["input"], row["output"]) == (2, IMAGE_TEXT_TOKENS, 2 * IMAGE_OUTPUT_TOKENS)


def test_dalle_url_answers_pass_through_and_bill_per_image(gateway):
    tollgate, mock = gateway
    with client(tollgate, "dalle") as c:
        result = c.images.generate(
            model="dall-e-3", prompt="p", size="1024x1792", quality="hd", response_format="url"
        )
    assert result.data[0].url == f"{mock.base_url}/files/image.png"
    usd = RATIO * Decimal("0.12")
    assert billed(tollgate, "dalle", nanos(usd)) == 96_000_000
    assert admin_row(tollgate, "dalle")["estimated"] == 0


def failover_config(openai_url: str) -> str:
    """Two channels on one upstream; the first fails over to the second."""
    channels = "".join(
        f"""
[[channels]]
name = "{name}"
type = "openai"
base_url = "{openai_url}"
api_key = "sk-e2e-media-upstream"
groups = ["media"]
models = ["gpt-image-1"]
priority = {priority}
"""
        for name, priority in (("first", 10), ("second", 5))
    )
    return f"""
[[groups]]
name = "media"
ratio = {RATIO}

[[models]]
name = "gpt-image-1"
input = 5
image_input = 10
output = 40
per_image = {{ "1024x1024" = 0.011 }}
{channels}
[[keys]]
name = "edit"
key_sha256 = "{sha256_hex(secret("edit"))}"
groups = ["media"]
"""


def test_images_edit_fails_over_with_the_same_multipart_bytes(start_tollgate):
    mock = MockOpenAI().start()
    try:
        tollgate = start_tollgate(failover_config(mock.base_url))
        mock.fail_next(500)
        with client(tollgate, "edit") as c:
            result = c.images.edit(
                model="gpt-image-1",
                image=("cat.png", PNG * 3000, "image/png"),
                prompt="add a hat",
                size="1024x1024",
            )
    finally:
        mock.stop()
    assert len(result.data) == 1
    first, second = mock.requests
    assert first.path == second.path == "/v1/images/edits"
    assert first.body == second.body, "the upload is replayed byte-identical"
    assert first.headers["content-type"] == second.headers["content-type"]
    assert first.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert PNG * 3000 in second.body
    per_million = (
        IMAGE_TEXT_TOKENS * Decimal(5) + IMAGE_INPUT_TOKENS * Decimal(10) + IMAGE_OUTPUT_TOKENS * Decimal(40)
    )
    usd = RATIO * (per_million / Decimal(1_000_000) + Decimal("0.011"))
    assert billed(tollgate, "edit", nanos(usd)) == nanos(usd) == 44_292_000
    assert admin_row(tollgate, "edit")["image_input"] == IMAGE_INPUT_TOKENS


# The SDK marks audio.translations deprecated; OpenAI still serves it.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_transcriptions_and_translations_bill_by_the_second(gateway):
    tollgate, mock = gateway
    audio = wav(Decimal("2.5"))
    with client(tollgate, "audio") as c:
        plain = c.audio.translations.create(model="whisper-1", file=("a.wav", audio, "audio/wav"))
        verbose = c.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", audio, "audio/wav"), response_format="verbose_json"
        )
        text = c.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", audio, "audio/wav"), response_format="text"
        )
    assert plain.text == verbose.text == TRANSCRIPT
    assert text.strip() == TRANSCRIPT
    assert [r.path for r in mock.requests] == [
        "/v1/audio/translations", "/v1/audio/transcriptions", "/v1/audio/transcriptions"
    ]
    # json: usage 3 s (2.5 rounded up); verbose_json: duration 2.5 s; text:
    # no duration, estimated from the WAV header (2.5 s).
    seconds = Decimal(3) + Decimal("2.5") + Decimal("2.5")
    usd = RATIO * seconds * Decimal("0.0001")
    assert billed(tollgate, "audio", nanos(usd)) == nanos(usd) == 640_000
    row = admin_row(tollgate, "audio")
    assert (row["audio_ms"], row["estimated"], row["requests"]) == (8000, 1, 3)


def test_speech_streams_audio_and_bills_characters(gateway):
    tollgate, mock = gateway
    mock.speech_bytes = 300_000
    text = "Hello, wörld! 👋"
    try:
        with client(tollgate, "speech") as c:
            audio = c.audio.speech.create(model="tts-1", voice="alloy", input=text)
            data = audio.read()
    finally:
        mock.speech_bytes = 4096
    assert len(data) == 300_000
    assert data[:512] == bytes(range(256)) * 2
    usd = RATIO * len(text) * Decimal("0.015") / 1000
    assert len(text) == 15
    assert billed(tollgate, "speech", nanos(usd)) == nanos(usd) == 180_000
    assert admin_row(tollgate, "speech")["chars"] == 15


def test_moderations_are_relayed_and_billed_per_request(gateway):
    tollgate, mock = gateway
    with client(tollgate, "moderation") as c:
        result = c.moderations.create(model="omni-moderation-latest", input=["one", "two"])
    assert len(result.results) == 2 and not result.results[0].flagged
    assert mock.last().path == "/v1/moderations"
    assert billed(tollgate, "moderation", 80_000) == 80_000


def post_json(tollgate, path: str, key: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        tollgate.url(path), data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_rerank_only_on_channels_with_rerank(gateway):
    tollgate, mock = gateway
    body = {"model": "jina-reranker-v2", "query": "q", "documents": ["a", "b", "c"]}
    status, answer = post_json(tollgate, "/v1/rerank", secret("rerank"), body)
    assert status == 200, answer
    assert [r["index"] for r in answer["results"]] == [0, 1, 2]
    usd = RATIO * RERANK_TOKENS * Decimal("0.02") / Decimal(1_000_000)
    assert billed(tollgate, "rerank", nanos(usd)) == nanos(usd) == 672
    # The "plain" group's only channel has no rerank endpoint.
    status, answer = post_json(tollgate, "/v1/rerank", NO_RERANK_KEY, body)
    assert status == 400
    assert answer["error"]["code"] == "unsupported_format"
    assert len(mock.requests) == 1


def test_media_errors_in_the_openai_dialect(gateway):
    tollgate, mock = gateway
    with client(tollgate, "errors") as c:
        with pytest.raises(openai.BadRequestError) as e:
            c.images.generate(model="gpt-image-1", prompt="p", size="256x256")
        assert e.value.code == "unsupported_field"
        assert "no price for size `256x256`" in e.value.message
        # A text model: no channel serves it on the images endpoint.
        with pytest.raises(openai.BadRequestError) as e:
            c.images.generate(model="gemini-2.5-flash", prompt="p")
        assert e.value.code == "unsupported_format"
        assert "model with image output" in e.value.message
        with pytest.raises(openai.APIStatusError) as e:
            c.images.edit(model="gpt-image-1", image=("big.png", b"\0" * (MAX_BODY + 1), "image/png"), prompt="p")
        assert e.value.status_code == 413
        assert e.value.body["code"] == "request_too_large"
    assert mock.requests == []
    assert spent_nano_usd(tollgate, secret("errors")) == 0


def test_genai_image_generation_bills_candidates_tokens(stack):
    tollgate, _, _ = stack
    c = genai.Client(
        api_key=secret("gemini"),
        http_options=types.HttpOptions(base_url=tollgate.url(), api_version="v1beta", timeout=20_000),
    )
    response = c.models.generate_content(
        model="gemini-2.5-flash-image",
        contents="draw a lighthouse",
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]),
    )
    parts = response.candidates[0].content.parts
    assert parts[0].text == "Here is your image."
    assert parts[1].inline_data.data == PNG
    assert parts[1].inline_data.mime_type == "image/png"
    # Image tokens (candidatesTokensDetails) at image_output, text at output.
    per_million = (GEMINI_PROMPT * Decimal("0.3") + GEMINI_IMAGE_TEXT_TOKENS * Decimal("2.5")
                   + GEMINI_IMAGE_TOKENS * Decimal(30))
    usd = RATIO * per_million / Decimal(1_000_000)
    assert billed(tollgate, "gemini", nanos(usd)) == nanos(usd) == 30_977_600
    row = admin_row(tollgate, "gemini")
    assert (row["output"], row["image_output"]) == (GEMINI_IMAGE_TEXT_TOKENS, GEMINI_IMAGE_TOKENS)


def test_openai_image_generation_on_gemini_and_imagen_by_translation(stack):
    tollgate, _, native = stack
    native.reset()
    with client(tollgate, "translated") as c:
        gemini = c.images.generate(model="gemini-2.5-flash-image", prompt="a lighthouse", size="1024x1536")
        imagen = c.images.generate(model="imagen-4.0-generate-001", prompt="a lighthouse", n=2,
                                   size="1024x1024")
        edited = c.images.edit(model="gemini-2.5-flash-image", image=("cat.png", PNG, "image/png"),
                               prompt="add a hat")
        with pytest.raises(openai.BadRequestError) as e:
            c.images.generate(model="gemini-2.5-flash-image", prompt="p", response_format="url")
        assert e.value.code == "unsupported_field"
        assert "b64_json" in e.value.message
    assert base64.b64decode(gemini.data[0].b64_json) == PNG
    assert gemini.data[0].revised_prompt == "Here is your image."
    assert gemini.usage.output_tokens == GEMINI_IMAGE_TOKENS + GEMINI_IMAGE_TEXT_TOKENS
    assert [base64.b64decode(d.b64_json) for d in imagen.data] == [PNG, PNG]
    sent = [r for r in native.requests if r.method == "POST"]
    assert [r.path for r in sent] == [
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        "/v1beta/models/imagen-4.0-generate-001:predict",
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
    ]
    assert base64.b64decode(edited.data[0].b64_json) == PNG
    assert json.loads(sent[2].body)["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
        {"text": "add a hat"},
    ]
    assert json.loads(sent[0].body)["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "2:3"}}
    assert json.loads(sent[1].body)["parameters"] == {"sampleCount": 2, "aspectRatio": "1:1"}
    # Two Gemini answers (generation, edit) and two Imagen images.
    per_million = (GEMINI_PROMPT * Decimal("0.3") + GEMINI_IMAGE_TEXT_TOKENS * Decimal("2.5")
                   + GEMINI_IMAGE_TOKENS * Decimal(30))
    usd = RATIO * (2 * per_million / Decimal(1_000_000) + 2 * Decimal("0.04"))
    assert billed(tollgate, "translated", nanos(usd)) == nanos(usd) == 125_955_200
