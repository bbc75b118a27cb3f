"""Any client through any channel (docs/api.md, "Formats and channels"):
the official SDKs against channels that speak another format, through
tollgate's translation.

- the ``anthropic`` SDK (Claude Code's format) on an OpenAI-compatible
  channel, and ``client.responses`` of the ``openai`` SDK (Codex's format)
  on a chat-only one (``responses = false``): the mock OpenAI upstream;
- the ``openai`` SDK's chat completions on an Anthropic channel: the mock
  Anthropic upstream.

The mocks refuse what the real APIs refuse (Anthropic: ``max_tokens``,
alternating roles; OpenAI: message roles), so a sloppy translation fails
here. Each test checks the answer the SDK user sees, the request the
upstream received, and the exact bill: usage comes from the upstream's own
report, priced under the client's model name.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from access_log import Metered, spent_nano_usd, wait_metered, wait_spent
from harness import sha256_hex
from mock_native import (
    ANTHROPIC_CACHE_READ,
    ANTHROPIC_CACHE_WRITE,
    ANTHROPIC_INPUT,
    ANTHROPIC_TOOL_ID,
    MockNative,
)
from mock_openai import CACHED_TOKENS, PROMPT_TOKENS, TOOL_ARGUMENTS, TOOL_CALL_ID, MockOpenAI

CLIENT_KEY = "sk-e2e-client-translation"
OPENAI_CHANNEL_KEY = "sk-e2e-upstream-openai-compatible"
ANTHROPIC_CHANNEL_KEY = "sk-ant-e2e-upstream-translated"

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def config(openai_url: str, anthropic_url: str) -> str:
    return f"""
[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "deepseek-chat"
input = 0.27
output = 1.1
cached_input = 0.07

[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75

[[models]]
name = "claude-haiku-4-5"
input = 1
output = 5
max_output = 8192

[[models]]
name = "gpt-5-codex"
input = 1.25
output = 10
cached_input = 0.125

[[channels]]
name = "compatible"
type = "openai"
base_url = "{openai_url}"
api_key = "{OPENAI_CHANNEL_KEY}"
responses = false
models = ["deepseek-chat"]

[[channels]]
name = "openai-responses"
type = "openai"
base_url = "{openai_url}"
api_key = "{OPENAI_CHANNEL_KEY}"
models = ["gpt-5-codex"]

[[channels]]
name = "claude"
type = "anthropic"
base_url = "{anthropic_url}"
api_key = "{ANTHROPIC_CHANNEL_KEY}"
models = ["claude-sonnet-4-6", "claude-haiku-4-5"]

[[keys]]
name = "e2e-translation"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["default"]
"""


@pytest.fixture(scope="module")
def stack(start_tollgate_module):
    upstream_openai = MockOpenAI().start()
    upstream_anthropic = MockNative().start()
    tollgate = start_tollgate_module(config(upstream_openai.base_url, upstream_anthropic.base_url))
    yield tollgate, upstream_openai, upstream_anthropic
    upstream_openai.stop()
    upstream_anthropic.stop()


# Upstream requests of the module's tests so far: each has its line in
# the access log (no failover here), which follows its answer by a moment.
_SENT = [0]


@pytest.fixture(autouse=True)
def metered_before_the_next_test(stack):
    """A test counts the access log's lines before its own request: the
    lines of the tests before it must all be there by then."""
    yield
    tollgate, upstream_openai, upstream_native = stack
    _SENT[0] += len(upstream_openai.requests) + len(upstream_native.requests)
    wait_metered(tollgate, _SENT[0])


@pytest.fixture
def claude(stack):
    tollgate, upstream_openai, upstream_anthropic = stack
    upstream_openai.requests.clear()
    upstream_anthropic.reset()
    c = anthropic.Anthropic(base_url=tollgate.url(), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    yield c
    c.close()


@pytest.fixture
def gpt(stack):
    tollgate, upstream_openai, upstream_anthropic = stack
    upstream_openai.requests.clear()
    upstream_anthropic.reset()
    c = openai.OpenAI(base_url=tollgate.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    yield c
    c.close()


def deepseek_nanos(m: Metered) -> int:
    """input $0.27, cached $0.07, output $1.10 per 1M tokens, ratio 1."""
    return m.input * 270 + m.cached_input * 70 + m.output * 1100


def claude_nanos(m: Metered) -> int:
    return m.input * 3000 + m.cached_input * 300 + m.cache_write * 3750 + m.output * 15000


# -- the anthropic SDK on an OpenAI-compatible channel -------------------------


def test_anthropic_messages_on_an_openai_channel(claude, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    spent = spent_nano_usd(tollgate, CLIENT_KEY)
    r = claude.messages.create(
        model="deepseek-chat",
        max_tokens=64,
        system="Answer briefly.",
        messages=[{"role": "user", "content": "Hello translated world"}],
    )
    assert r.content[0].type == "text"
    assert r.content[0].text == "echo: Hello translated world"
    assert r.stop_reason == "end_turn"
    # OpenAI's prompt_tokens include the cached ones; Anthropic's
    # input_tokens do not.
    assert r.usage.input_tokens == PROMPT_TOKENS - CACHED_TOKENS
    assert r.usage.cache_read_input_tokens == CACHED_TOKENS
    assert r.usage.output_tokens == 4
    got = upstream.requests[-1]
    assert got.path == "/v1/chat/completions"
    assert got.headers["authorization"] == f"Bearer {OPENAI_CHANNEL_KEY}"
    sent = got.json()
    assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert sent["max_tokens"] == 64
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.output, m.estimated) == (16, 5, 4, False)
    assert m.channel == "compatible" and m.model == "deepseek-chat"
    # 16 x 0.27 + 5 x 0.07 + 4 x 1.10 per 1M tokens = 9,070 nano-USD
    assert deepseek_nanos(m) == 9_070
    assert wait_spent(tollgate, CLIENT_KEY, spent + 9_070) == spent + 9_070


def test_anthropic_stream_on_an_openai_channel(claude, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    with claude.messages.stream(
        model="deepseek-chat",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream me please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me please"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS
    sent = upstream.requests[-1].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.output, m.estimated) == (16, 5, 4, False)


@pytest.mark.parametrize("streamed", [False, True])
def test_anthropic_tool_round_trip_on_an_openai_channel(claude, stack, streamed):
    """Claude Code's loop: a tool call, the tool's result, the answer."""
    tollgate, upstream, _ = stack
    first_turn = [{"role": "user", "content": "Weather in Paris?"}]
    kwargs = dict(model="deepseek-chat", max_tokens=64, tools=[WEATHER_TOOL])
    if streamed:
        with claude.messages.stream(messages=first_turn, **kwargs) as stream:
            r = stream.get_final_message()
    else:
        r = claude.messages.create(messages=first_turn, **kwargs)
    assert r.stop_reason == "tool_use"
    call = next(b for b in r.content if b.type == "tool_use")
    assert (call.id, call.name, call.input) == (TOOL_CALL_ID, "get_weather", json.loads(TOOL_ARGUMENTS))
    sent = upstream.requests[-1].json()
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_TOOL["input_schema"]
    second_turn = first_turn + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"},
        ]},
    ]
    r2 = claude.messages.create(messages=second_turn, **kwargs)
    assert r2.content[0].text == "tool said: sunny"
    sent = upstream.requests[-1].json()
    assistant = sent["messages"][-2]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == TOOL_CALL_ID
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    result = sent["messages"][-1]
    assert (result["role"], result["tool_call_id"]) == ("tool", TOOL_CALL_ID)
    assert result["content"] in ("sunny", [{"type": "text", "text": "sunny"}])


def test_upstream_errors_reach_an_anthropic_client_in_its_dialect(claude, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    upstream.fail_next(400, {"error": {"message": "context too long", "type": "invalid_request_error"}})
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(
            model="deepseek-chat", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["message"] == "context too long"
    # Its access line may follow the answer: wait for it, so that the next
    # test does not count it as its own.
    wait_metered(tollgate, before + 1)


# -- the Responses API (Codex) on a chat-only channel --------------------------


def test_responses_on_a_chat_only_channel(gpt, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    r = gpt.responses.create(model="deepseek-chat", instructions="Be brief.", input="Hello responses")
    assert r.output_text == "echo: Hello responses"
    assert r.status == "completed"
    assert r.usage.input_tokens == PROMPT_TOKENS
    assert r.usage.input_tokens_details.cached_tokens == CACHED_TOKENS
    got = upstream.requests[-1]
    assert got.path == "/v1/chat/completions", "the host has no /v1/responses"
    assert got.json()["messages"][0] == {"role": "system", "content": "Be brief."}
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.output, m.estimated) == (16, 5, 3, False)


def test_responses_stream_on_a_chat_only_channel(gpt, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    deltas = []
    types = []
    with gpt.responses.stream(model="deepseek-chat", input="stream the responses") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: stream the responses"
    assert final.output_text == "echo: stream the responses"
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.index("response.output_item.added") < types.index("response.output_text.delta")
    assert final.usage.output_tokens == 4
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.output, m.estimated) == (16, 5, 4, False)
    assert upstream.requests[-1].path == "/v1/chat/completions"


def test_compaction_is_relayed_to_a_host_with_the_responses_api(gpt, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    r = gpt.responses.compact(
        model="gpt-5-codex",
        input=[{"role": "user", "content": "long session"}],
    )
    assert r.object == "response.compaction"
    assert r.output[-1].type == "compaction"
    got = upstream.requests[-1]
    assert got.path == "/v1/responses/compact"
    assert got.headers["authorization"] == f"Bearer {OPENAI_CHANNEL_KEY}"
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.model, m.input, m.cached_input, m.output, m.estimated) == (
        "gpt-5-codex", PROMPT_TOKENS - CACHED_TOKENS, CACHED_TOKENS, 7, False)


def test_compaction_is_refused_where_no_host_has_the_responses_api(gpt, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    with pytest.raises(openai.BadRequestError) as e:
        gpt.responses.compact(model="deepseek-chat", input="x")
    assert e.value.code == "unsupported_format"
    assert upstream.requests == [], "nothing reached the chat-only host"
    wait_metered(tollgate, before + 1)  # the refusal's line, so later tests count from here


def test_token_count_on_an_openai_channel_is_the_gateways_estimate(claude, stack):
    tollgate, upstream, _ = stack
    before = len(wait_metered(tollgate, 0))
    counted = claude.messages.count_tokens(
        model="deepseek-chat",
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    # cl100k: "Be brief." = 3 tokens, "Hello there" = 2, plus 4 per message.
    assert counted.input_tokens == 9
    assert upstream.requests == [], "OpenAI has no count endpoint: nothing goes upstream"
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.channel, m.input, m.output) == ("compatible", 0, 0), "counting is never billed"


# -- the openai SDK on an Anthropic channel ------------------------------------


def test_chat_completions_on_an_anthropic_channel(gpt, stack):
    tollgate, _, upstream = stack
    before = len(wait_metered(tollgate, 0))
    spent = spent_nano_usd(tollgate, CLIENT_KEY)
    r = gpt.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello Claude"},
        ],
    )
    assert r.choices[0].message.content == "echo: Hello Claude"
    assert r.choices[0].finish_reason == "stop"
    # Anthropic's input_tokens exclude cache reads and writes; OpenAI's
    # prompt_tokens include them.
    assert r.usage.prompt_tokens == ANTHROPIC_INPUT + ANTHROPIC_CACHE_READ + ANTHROPIC_CACHE_WRITE
    assert r.usage.prompt_tokens_details.cached_tokens == ANTHROPIC_CACHE_READ
    assert r.usage.completion_tokens == 3
    got = upstream.last()
    assert got.path == "/v1/messages"
    assert got.headers["x-api-key"] == ANTHROPIC_CHANNEL_KEY
    sent = got.json()
    assert sent["system"] == "Answer briefly."
    assert sent["max_tokens"] == 4096, "Anthropic requires it; the default when the client sets none"
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.cache_write, m.output) == (30, 200, 50, 3)
    # 30 x 3 + 200 x 0.30 + 50 x 3.75 + 3 x 15 per 1M tokens = 382,500 nano-USD
    assert claude_nanos(m) == 382_500
    assert wait_spent(tollgate, CLIENT_KEY, spent + 382_500) == spent + 382_500


def test_the_models_max_output_is_sent_when_the_client_sets_none(gpt, stack):
    _, _, upstream = stack
    r = gpt.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hello haiku"}]
    )
    assert r.choices[0].message.content == "echo: Hello haiku"
    assert upstream.last().json()["max_tokens"] == 8192, "[[models]] max_output"
    gpt.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "x"}], max_tokens=100
    )
    assert upstream.last().json()["max_tokens"] == 100, "the client's own limit wins"


def test_chat_stream_on_an_anthropic_channel(gpt, stack):
    tollgate, _, upstream = stack
    before = len(wait_metered(tollgate, 0))
    stream = gpt.chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "stream from claude"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream from claude"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage.completion_tokens == 4
    assert upstream.last().json()["stream"] is True
    m = wait_metered(tollgate, before + 1)[before]
    assert (m.input, m.cached_input, m.cache_write, m.output, m.estimated) == (30, 200, 50, 4, False)


@pytest.mark.parametrize("streamed", [False, True])
def test_chat_tool_round_trip_on_an_anthropic_channel(gpt, stack, streamed):
    _, _, upstream = stack
    tools = [{"type": "function", "function": {
        "name": WEATHER_TOOL["name"],
        "description": WEATHER_TOOL["description"],
        "parameters": WEATHER_TOOL["input_schema"],
    }}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if streamed:
        chunks = list(gpt.chat.completions.create(
            model="claude-sonnet-4-6", messages=messages, tools=tools, stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        call_id = next(tc.id for tc in calls if tc.id)
        name = next(tc.function.name for tc in calls if tc.function and tc.function.name)
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        r = gpt.chat.completions.create(model="claude-sonnet-4-6", messages=messages, tools=tools)
        assert r.choices[0].finish_reason == "tool_calls"
        tc = r.choices[0].message.tool_calls[0]
        call_id, name, arguments = tc.id, tc.function.name, tc.function.arguments
    assert (call_id, name, json.loads(arguments)) == (ANTHROPIC_TOOL_ID, "get_weather", {"city": "Paris"})
    sent = upstream.last().json()
    assert sent["tools"][0]["input_schema"] == WEATHER_TOOL["input_schema"]
    follow_up = messages + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}},
        ]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
    ]
    r2 = gpt.chat.completions.create(model="claude-sonnet-4-6", messages=follow_up, tools=tools)
    assert r2.choices[0].message.content == "tool said: sunny"
    sent = upstream.last().json()
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    result = sent["messages"][2]["content"][0]
    assert (result["type"], result["tool_use_id"]) == ("tool_result", call_id)
    assert result["content"] in ("sunny", [{"type": "text", "text": "sunny"}])
