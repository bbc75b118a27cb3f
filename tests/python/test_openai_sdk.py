"""The official ``openai`` SDK through tollgate to a mock OpenAI upstream.

Each test checks what the SDK user sees (exact text, usage, vectors, error
codes) and what the upstream received (mapped model name, the channel's key
and never the client's, the usage request tollgate adds to streams).
"""

from __future__ import annotations

import threading

import openai
import pytest

from mock_openai import CACHED_TOKENS, PROMPT_TOKENS, embedding_for

UPSTREAM_GPT_4O = "gpt-4o-2024-08-06"


def assert_upstream_auth(received, gateway) -> None:
    """The channel key went upstream; the client key went nowhere."""
    assert received.headers["authorization"] == f"Bearer {gateway.channel_key}"
    for name, value in received.headers.items():
        assert gateway.client_key not in value, f"client key leaked upstream in {name}"
    assert gateway.client_key.encode() not in received.body


def test_chat_completion(openai_client, openai_gateway, mock_openai):
    r = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Say hi to the gateway"},
        ],
    )
    assert r.choices[0].message.content == "echo: Say hi to the gateway"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == PROMPT_TOKENS
    assert r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS

    got = mock_openai.last()
    assert got.path == "/v1/chat/completions"
    body = got.json()
    assert body["model"] == UPSTREAM_GPT_4O
    assert body["messages"][1]["content"] == "Say hi to the gateway"
    assert "stream_options" not in body
    assert_upstream_auth(got, openai_gateway)


def test_unmapped_model_goes_upstream_unchanged(openai_client, mock_openai):
    r = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}]
    )
    assert r.choices[0].message.content == "echo: ping"
    assert mock_openai.last().json()["model"] == "gpt-4o-mini"


def test_chat_stream_without_usage_request(openai_client, openai_gateway, mock_openai):
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "count one two three"}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: count one two three"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 5, "one delta per word, passed through as sent"
    # The client did not ask for usage: tollgate asked upstream (to bill)
    # and removed the usage chunk again.
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    got = mock_openai.last()
    body = got.json()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == UPSTREAM_GPT_4O
    assert_upstream_auth(got, openai_gateway)


def test_chat_stream_with_usage_request(openai_client, mock_openai):
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "with usage please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: with usage please"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == PROMPT_TOKENS
    assert last.usage.completion_tokens == 4
    assert last.usage.total_tokens == PROMPT_TOKENS + 4
    assert last.usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
    assert [c for c in chunks if c.usage is not None] == [last]
    assert mock_openai.last().json()["stream_options"] == {"include_usage": True}


def test_chat_stream_events_arrive_before_the_stream_ends(openai_client, mock_openai):
    hold = threading.Event()
    mock_openai.hold_stream = hold  # upstream stops before its last word
    stream = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "first then last"}],
        stream=True,
    )
    seen = []
    for chunk in stream:
        piece = chunk.choices[0].delta.content if chunk.choices else None
        if piece:
            if not seen:
                # The first word reached us while upstream still holds the
                # last one back: release it.
                hold.set()
            seen.append(piece)
    assert "".join(seen) == "echo: first then last"
    assert not mock_openai.hold_expired, "the first words were held back until the end"


def test_embeddings_base64_default(openai_client, openai_gateway, mock_openai):
    r = openai_client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"]
    )
    assert [d.index for d in r.data] == [0, 1]
    assert r.data[0].embedding == embedding_for(0)
    assert r.data[1].embedding == embedding_for(1)
    assert r.usage.prompt_tokens == 2 * PROMPT_TOKENS

    got = mock_openai.last()
    assert got.path == "/v1/embeddings"
    body = got.json()
    assert body["model"] == "text-embedding-3-small"
    assert body["input"] == ["alpha", "beta"]
    assert body["encoding_format"] == "base64"
    assert_upstream_auth(got, openai_gateway)


def test_embeddings_float(openai_client, mock_openai):
    r = openai_client.embeddings.create(
        model="text-embedding-3-small", input="gamma", encoding_format="float"
    )
    assert r.data[0].embedding == embedding_for(0)
    assert mock_openai.last().json()["encoding_format"] == "float"


def test_responses(openai_client, openai_gateway, mock_openai):
    r = openai_client.responses.create(
        model="gpt-4o", input="Describe tollgate", instructions="one line"
    )
    assert r.output_text == "echo: Describe tollgate"
    assert r.status == "completed"
    assert r.usage.input_tokens == PROMPT_TOKENS
    assert r.usage.output_tokens == 3
    assert r.usage.input_tokens_details.cached_tokens == CACHED_TOKENS

    got = mock_openai.last()
    assert got.path == "/v1/responses"
    body = got.json()
    assert body["model"] == UPSTREAM_GPT_4O
    assert body["input"] == "Describe tollgate"
    assert body["instructions"] == "one line"
    assert_upstream_auth(got, openai_gateway)


def test_responses_stream(openai_client, openai_gateway, mock_openai):
    stream = openai_client.responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": "stream the responses API"}],
        stream=True,
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: stream the responses API"
    assert len(deltas) == 5
    completed = events[-1].response
    assert completed.output_text == "echo: stream the responses API"
    assert completed.usage.input_tokens == PROMPT_TOKENS
    assert completed.usage.output_tokens == 5
    assert [e.sequence_number for e in events] == list(range(len(events)))

    body = mock_openai.last().json()
    assert body["model"] == UPSTREAM_GPT_4O
    assert body["stream"] is True
    # The Responses API always reports usage: nothing to inject.
    assert "stream_options" not in body
    assert_upstream_auth(mock_openai.last(), openai_gateway)


def test_responses_stream_helper(openai_client, mock_openai):
    with openai_client.responses.stream(model="gpt-4o", input="helper") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: helper"
    assert final.output_text == "echo: helper"
    assert final.usage.total_tokens == PROMPT_TOKENS + 2


def test_models_list(openai_client, mock_openai):
    ids = [m.id for m in openai_client.models.list()]
    # Served in the key's group, not `o3` (group premium), sorted.
    assert ids == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    assert mock_openai.requests == [], "the model list is tollgate's own answer"


def test_unknown_client_key(openai_gateway, mock_openai):
    client = openai_gateway.client(api_key="sk-not-a-key")
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"
    assert e.value.type == "authentication_error"
    assert "sk-not-a-key" not in str(e.value.body)
    assert mock_openai.requests == []


def test_unknown_model(openai_client, mock_openai):
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "model_not_found"
    assert mock_openai.requests == []


def test_model_outside_the_keys_groups(openai_client, mock_openai):
    with pytest.raises(openai.PermissionDeniedError) as e:
        openai_client.chat.completions.create(
            model="o3", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.code == "model_not_in_group"
    assert "default" in e.value.message
    assert mock_openai.requests == []


def test_upstream_error_reaches_the_sdk_as_sent(openai_client, mock_openai):
    # A 400 is the request's fault, not the channel's: no failover, the
    # provider's own error goes back unchanged.
    mock_openai.fail_next(
        400,
        {"error": {"message": "bad temperature", "type": "invalid_request_error",
                   "param": "temperature", "code": "invalid_value"}},
    )
    with pytest.raises(openai.BadRequestError) as e:
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], temperature=9
        )
    assert e.value.code == "invalid_value"
    assert e.value.param == "temperature"
    assert len(mock_openai.requests) == 1


def test_upstream_auth_failure_is_a_gateway_error(private_openai_gateway):
    gateway = private_openai_gateway
    client = gateway.client()
    # The channel's key is refused: the client gets 502 upstream_auth_error,
    # never the provider's text (it would be about the operator's key).
    gateway.mock.fail_next(
        401,
        {"error": {"message": "Incorrect API key provided: sk-e2e-up***",
                   "type": "invalid_request_error", "code": "invalid_api_key"}},
    )
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 502
    assert e.value.code == "upstream_auth_error"
    assert "Incorrect API key" not in str(e.value.body)
    # The only channel now cools down: refused up front, upstream untouched.
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 503
    assert e.value.code == "no_available_channel"
    # Retry-After: what is left of the channel's 30 s cooldown.
    assert 25 <= int(e.value.response.headers["retry-after"]) <= 30
    assert len(gateway.mock.requests) == 1
