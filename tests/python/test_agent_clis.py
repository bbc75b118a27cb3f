"""The real agent CLIs through tollgate (SPEC §8, docs/api.md "Agent CLIs"):
Claude Code, Codex CLI and Gemini CLI, run non-interactively with the
settings the docs give, against mock upstreams on loopback.

- Claude Code (``claude -p``) on an Anthropic channel (native) and on an
  OpenAI-compatible one (``deepseek-chat``, translated to Chat
  Completions); Codex CLI (``codex exec``) on an OpenAI channel with
  ``/v1/responses`` (native) and on a chat-only one (``responses = false``,
  translated); Gemini CLI (``gemini -p``) on a Gemini channel (native).
- And each CLI on the channel types that serve its format by translation,
  through the Chat pivot where neither side speaks Chat
  (``test_cli_through_translation``): Gemini CLI on a chat host and on
  Anthropic, Codex on Anthropic and on Gemini, Claude Code on Gemini.
- Each CLI gets a plain turn and a tool-call turn: the mocks answer in
  ``tools="directed"`` mode (see ``agent_turns``), so a prompt
  ``CALL <tool> <args>`` makes the model call one of the CLI's own tools
  (Claude Code's Read, Codex's exec_command, Gemini CLI's read_file) on a
  file holding ``RESULT_MARKER``, the CLI runs it and sends the result
  back, and the answer quotes it.
- Each test checks what the user sees (the CLI's exact answer), what
  tollgate metered for every request (tokens by kind, all 200) and the
  exact bill (``/api/usage``); and that the upstream got the channel's key.
- Codex with ``supports_websockets = true`` tries a WebSocket on
  ``/v1/responses`` first: tollgate answers 426 once and Codex POSTs at
  once, without its retry backoff (seconds with any other answer).

The CLIs come from ``tests/agents`` (``./dev deps`` installs the versions
of its package-lock.json; ``./dev`` sets TOLLGATE_AGENT_CLIS=required, so
that a missing CLI fails there instead of skipping). Their own network
traffic (telemetry, update checks, plugin sync) is switched off by the
settings below: every connection they open goes to tollgate on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from access_log import Metered, metered, spent_nano_usd, wait_metered, wait_spent
from agent_turns import RESULT_MARKER, call_directive
from harness import REPO, sha256_hex
from mock_native import MockNative
from mock_openai import MockOpenAI

AGENTS_BIN = REPO / "tests" / "agents" / "node_modules" / ".bin"
# Seconds one CLI run may take (they take 1 to 3 here).
CLI_TIMEOUT = 60

CLIENT_KEY = "sk-e2e-client-agent-clis"
ANTHROPIC_CHANNEL_KEY = "sk-ant-e2e-upstream-agents"
COMPATIBLE_CHANNEL_KEY = "sk-e2e-upstream-compatible-agents"
OPENAI_CHANNEL_KEY = "sk-e2e-upstream-openai-agents"
GEMINI_CHANNEL_KEY = "AIza-e2e-upstream-agents"

CANARY = f"{RESULT_MARKER} 7f3a sings"
TOOL_ANSWER = f"tool said: {CANARY}"


def config(openai_url: str, native_url: str) -> str:
    return f"""
[[groups]]
name = "default"
ratio = 1.0
all_channels = true

[[models]]
name = "claude-sonnet-4-6"
input = 3
output = 15
cached_input = 0.3
cache_write = 3.75

[[models]]
name = "deepseek-chat"
input = 0.27
output = 1.1
cached_input = 0.07

[[models]]
name = "gpt-5"
input = 1.25
output = 10
cached_input = 0.125

[[models]]
name = "gemini-2.5-flash"
input = 0.3
output = 2.5
cached_input = 0.075

[[models]]
name = "mock-codex"
input = 1
output = 2

[[channels]]
name = "demo"
type = "mock"
models = ["mock-codex"]

[[channels]]
name = "claude"
type = "anthropic"
base_url = "{native_url}"
api_key = "{ANTHROPIC_CHANNEL_KEY}"
models = ["claude-sonnet-4-6"]

[[channels]]
name = "compatible"
type = "openai"
base_url = "{openai_url}"
api_key = "{COMPATIBLE_CHANNEL_KEY}"
responses = false
models = ["deepseek-chat"]

[[channels]]
name = "openai"
type = "openai"
base_url = "{openai_url}"
api_key = "{OPENAI_CHANNEL_KEY}"
models = ["gpt-5"]

[[channels]]
name = "gemini"
type = "gemini"
base_url = "{native_url}"
api_key = "{GEMINI_CHANNEL_KEY}"
models = ["gemini-2.5-flash"]

[[keys]]
name = "e2e-agent-clis"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["default"]
"""


# Nano-USD per token (USD per 1M tokens x 1000) by kind: input, cached
# input, cache write, output; ratio 1.
PRICES = {
    "claude-sonnet-4-6": (3_000, 300, 3_750, 15_000),
    "deepseek-chat": (270, 70, 0, 1_100),
    "gpt-5": (1_250, 125, 0, 10_000),
    "mock-codex": (1_000, 1_000, 1_000, 2_000),
    "gemini-2.5-flash": (300, 75, 0, 2_500),
}


def nanos(m: Metered) -> int:
    p_in, p_cached, p_write, p_out = PRICES[m.model]
    return m.input * p_in + m.cached_input * p_cached + m.cache_write * p_write + m.output * p_out


@dataclass
class Stack:
    tollgate: object
    openai: MockOpenAI
    native: MockNative


@pytest.fixture(scope="module")
def stack(start_tollgate_module):
    upstream_openai = MockOpenAI(tools="directed").start()
    upstream_native = MockNative(tools="directed").start()
    tollgate = start_tollgate_module(config(upstream_openai.base_url, upstream_native.base_url))
    yield Stack(tollgate, upstream_openai, upstream_native)
    upstream_openai.stop()
    upstream_native.stop()


@pytest.fixture
def workdir(tmp_path: Path, stack: Stack) -> Path:
    """A project directory for the CLI (with the file its tool reads) and
    an empty HOME beside it; the mocks' records start empty."""
    stack.openai.reset()
    stack.native.reset()
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "canary.txt").write_text(CANARY + "\n")
    return project


def cli(name: str) -> Path:
    path = AGENTS_BIN / name
    if not os.access(path, os.X_OK):
        reason = f"no {name} at {path}: `./dev deps` installs the agent CLIs"
        if os.environ.get("TOLLGATE_AGENT_CLIS") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@dataclass
class Run:
    answer: str
    seconds: float
    stderr: str


def run(argv: list, project: Path, env: dict[str, str]) -> Run:
    """Runs a CLI in ``project`` with only ``env`` (and PATH, a HOME of its
    own), within CLI_TIMEOUT; it must succeed."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(project.parent / "home"),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=project,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, (
        f"{argv[0].name} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return Run(done.stdout.strip(), seconds, done.stderr)


class Bill:
    """The requests tollgate metered and the key's spend since it was made."""

    def __init__(self, tollgate) -> None:
        self.tollgate = tollgate
        self.lines = len(metered(tollgate))
        self.spent = spent_nano_usd(tollgate, CLIENT_KEY)

    def since(self, count: int) -> list[Metered]:
        """The ``count`` requests since; no more came (a CLI that retried or
        sent a request of its own would show here)."""
        lines = wait_metered(self.tollgate, self.lines + count)[self.lines:]
        time.sleep(0.2)
        assert metered(self.tollgate)[self.lines:] == lines, "more requests than expected"
        return lines

    def spent_since(self, expected: int) -> int:
        return wait_spent(self.tollgate, CLIENT_KEY, self.spent + expected) - self.spent


def request_lines(tollgate) -> list[tuple[datetime, str]]:
    """(time, status) of each request line of the access log."""
    out = []
    for line in tollgate.log().splitlines():
        if " request " in line and " status=" in line:
            at = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
            out.append((at, line.split(" status=", 1)[1].split()[0]))
    return out


def usage(m: Metered) -> tuple[str, str, int, int, int, int, bool]:
    return (m.model, m.channel, m.input, m.cached_input, m.cache_write, m.output, m.estimated)


# -- Claude Code ----------------------------------------------------------------

# Claude Code's own traffic besides the model (telemetry, error reports,
# update checks, release notes) stays off.
CLAUDE_QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


def claude(stack: Stack, project: Path, prompt: str, model: str, key_env: str) -> Run:
    env = {
        "ANTHROPIC_BASE_URL": stack.tollgate.url(),
        # Either works: x-api-key (API key) or Authorization: Bearer (token).
        key_env: CLIENT_KEY,
        **CLAUDE_QUIET,
    }
    return run([cli("claude"), "-p", prompt, "--model", model], project, env)


def test_claude_code_on_an_anthropic_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    r = claude(stack, workdir, "Hello there", "claude-sonnet-4-6", "ANTHROPIC_API_KEY")
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    # The mock's usage: 30 input, 200 cache reads, 50 cache writes, a word
    # an output token.
    assert usage(m) == ("claude-sonnet-4-6", "claude", 30, 200, 50, 3, False)
    # 30 x 3 + 200 x 0.30 + 50 x 3.75 + 3 x 15 per 1M tokens
    assert nanos(m) == 382_500
    assert bill.spent_since(382_500) == 382_500
    got = stack.native.last()
    assert got.path.split("?")[0] == "/v1/messages"
    assert got.headers["x-api-key"] == ANTHROPIC_CHANNEL_KEY


def test_claude_code_tool_turn_on_an_anthropic_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    read = call_directive("Read", {"file_path": str(workdir / "canary.txt")})
    r = claude(stack, workdir, read, "claude-sonnet-4-6", "ANTHROPIC_AUTH_TOKEN")
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == ("claude-sonnet-4-6", "claude", 30, 0, 0, 7, False)
    assert usage(answer) == ("claude-sonnet-4-6", "claude", 30, 200, 50, 5, False)
    # (30 x 3 + 7 x 15) + (30 x 3 + 200 x 0.30 + 50 x 3.75 + 5 x 15) per 1M
    assert (nanos(call), nanos(answer)) == (195_000, 412_500)
    assert bill.spent_since(607_500) == 607_500
    sent = json.loads(stack.native.last().body)
    result = sent["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and CANARY in json.dumps(result["content"])


def test_claude_code_on_an_openai_compatible_channel(stack, workdir):
    """Translated to Chat Completions. Claude Code sends a model it does not
    know (``deepseek-chat``) its environment as a mid-conversation ``system``
    message: it must reach the host as a chat system message (tollgate
    refused it with 400 before, and Claude Code gave up)."""
    bill = Bill(stack.tollgate)
    r = claude(stack, workdir, "Hello there", "deepseek-chat", "ANTHROPIC_API_KEY")
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    # OpenAI's 21 prompt tokens include the 5 cached ones.
    assert usage(m) == ("deepseek-chat", "compatible", 16, 5, 0, 3, False)
    # 16 x 0.27 + 5 x 0.07 + 3 x 1.10 per 1M tokens
    assert nanos(m) == 7_970
    assert bill.spent_since(7_970) == 7_970
    got = stack.openai.last()
    assert got.path == "/v1/chat/completions"
    assert got.headers["authorization"] == f"Bearer {COMPATIBLE_CHANNEL_KEY}"
    roles = [message["role"] for message in got.json()["messages"]]
    assert roles == ["system", "user", "system"], roles


def test_claude_code_tool_turn_on_an_openai_compatible_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    read = call_directive("Read", {"file_path": str(workdir / "canary.txt")})
    r = claude(stack, workdir, read, "deepseek-chat", "ANTHROPIC_AUTH_TOKEN")
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == ("deepseek-chat", "compatible", 16, 5, 0, 0, False)
    assert usage(answer) == ("deepseek-chat", "compatible", 16, 5, 0, 5, False)
    assert (nanos(call), nanos(answer)) == (4_670, 10_170)
    assert bill.spent_since(14_840) == 14_840
    sent = stack.openai.last().json()
    tool = next(m for m in sent["messages"] if m["role"] == "tool")
    assert CANARY in tool["content"]


# -- Codex CLI --------------------------------------------------------------------


def codex_home(stack: Stack, project: Path, websockets: bool = False) -> Path:
    """CODEX_HOME with the docs' provider entry; Codex's plugin and app
    sync (GitHub, chatgpt.com), update check and analytics off."""
    home = project.parent / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(
        f"""check_for_update_on_startup = false
model_provider = "tollgate"

[model_providers.tollgate]
name = "tollgate"
base_url = "{stack.tollgate.url('/v1')}"
wire_api = "responses"
env_key = "TOLLGATE_API_KEY"
supports_websockets = {str(websockets).lower()}

[features]
plugins = false
remote_plugin = false
apps = false

[analytics]
enabled = false
"""
    )
    return home


def codex(stack: Stack, project: Path, prompt: str, model: str, websockets: bool = False) -> Run:
    env = {
        "CODEX_HOME": str(codex_home(stack, project, websockets)),
        "TOLLGATE_API_KEY": CLIENT_KEY,
    }
    # The sandbox is bypassed: the only command is the test's own `cat` of
    # its file, and a CI machine may lack what Codex's sandbox needs.
    argv = [cli("codex"), "exec", "--strict-config", "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox", "-m", model, prompt]
    return run(argv, project, env)


CAT = call_directive("exec_command", {"cmd": "cat canary.txt"})


def test_codex_on_an_openai_channel_with_responses(stack, workdir):
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, "Hello there", "gpt-5")
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    assert usage(m) == ("gpt-5", "openai", 16, 5, 0, 3, False)
    # 16 x 1.25 + 5 x 0.125 + 3 x 10 per 1M tokens
    assert nanos(m) == 50_625
    assert bill.spent_since(50_625) == 50_625
    got = stack.openai.last()
    assert got.path == "/v1/responses"
    assert got.headers["authorization"] == f"Bearer {OPENAI_CHANNEL_KEY}"


def test_codex_tool_turn_on_an_openai_channel_with_responses(stack, workdir):
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, CAT, "gpt-5")
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == ("gpt-5", "openai", 16, 5, 0, 0, False)
    assert usage(answer) == ("gpt-5", "openai", 16, 5, 0, 5, False)
    assert (nanos(call), nanos(answer)) == (20_625, 70_625)
    assert bill.spent_since(91_250) == 91_250
    sent = stack.openai.last().json()
    output = next(i for i in sent["input"] if i.get("type") == "function_call_output")
    assert CANARY in json.dumps(output)


def test_codex_on_the_mock_channel(stack, workdir):
    """The demo config's offline channel: Codex prints the mock's answer
    (its Responses stream has every event Codex waits for)."""
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, "Hello there", "mock-codex")
    assert r.answer == ("Hello from the tollgate mock channel. This answer is deterministic, "
                        "so tests and demos can rely on it.")
    [m] = bill.since(1)
    assert (m.model, m.channel, m.output, m.estimated) == ("mock-codex", "demo", 18, False)
    assert m.input > 0
    assert bill.spent_since(nanos(m)) == nanos(m)


def test_codex_on_a_chat_only_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, "Hello there", "deepseek-chat")
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    assert usage(m) == ("deepseek-chat", "compatible", 16, 5, 0, 3, False)
    assert bill.spent_since(7_970) == 7_970
    got = stack.openai.last()
    assert got.path == "/v1/chat/completions", "the host has no /v1/responses"
    assert got.headers["authorization"] == f"Bearer {COMPATIBLE_CHANNEL_KEY}"


def test_codex_tool_turn_on_a_chat_only_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, CAT, "deepseek-chat")
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == ("deepseek-chat", "compatible", 16, 5, 0, 0, False)
    assert usage(answer) == ("deepseek-chat", "compatible", 16, 5, 0, 5, False)
    assert bill.spent_since(14_840) == 14_840
    sent = stack.openai.last().json()
    tool = next(m for m in sent["messages"] if m["role"] == "tool")
    assert CANARY in tool["content"]


def test_codex_falls_back_from_websocket_at_once(stack, workdir):
    """One upgrade attempt answered 426, then at once the POST: no retry,
    no wait. (To the 404 tollgate gave before, Codex made 7 attempts over
    ~6.5 s.)"""
    bill = Bill(stack.tollgate)
    r = codex(stack, workdir, "Hello there", "gpt-5", websockets=True)
    assert r.answer == "echo: Hello there"
    refused, served = bill.since(2)
    assert (refused.model, refused.output) == ("", 0), "the upgrade is refused unbilled"
    assert usage(served) == ("gpt-5", "openai", 16, 5, 0, 3, False)
    assert bill.spent_since(50_625) == 50_625
    (refused_at, status), (served_at, served_status) = request_lines(stack.tollgate)[-2:]
    assert (status, served_status) == ("426", "200")
    gap = (served_at - refused_at).total_seconds()
    print(f"codex exec {r.seconds:.2f} s; from the 426 to the answered POST {gap:.3f} s")
    assert gap < 1.0, f"Codex waited {gap:.1f} s after the 426"


# -- Gemini CLI -------------------------------------------------------------------


def gemini(stack: Stack, project: Path, prompt: str, model: str = "gemini-2.5-flash") -> Run:
    """GOOGLE_GEMINI_BASE_URL alone selects the "gateway" auth type, which
    this version refuses when not interactive ("Invalid auth method
    selected."): settings.json selects the API-key type, and the base URL
    still applies to it."""
    settings = project.parent / "home" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
    }))
    env = {
        "GOOGLE_GEMINI_BASE_URL": stack.tollgate.url(),
        "GEMINI_API_KEY": CLIENT_KEY,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }
    return run([cli("gemini"), "-p", prompt, "-m", model], project, env)


def test_gemini_cli_on_a_gemini_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    r = gemini(stack, workdir, "Hello there")
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    # 40 prompt tokens of which 10 cached; 3 words + 3 thought tokens out.
    assert usage(m) == ("gemini-2.5-flash", "gemini", 30, 10, 0, 6, False)
    # 30 x 0.30 + 10 x 0.075 + 6 x 2.50 per 1M tokens
    assert nanos(m) == 24_750
    assert bill.spent_since(24_750) == 24_750
    got = stack.native.last()
    assert got.path.startswith("/v1beta/models/gemini-2.5-flash:streamGenerateContent")
    assert got.headers["x-goog-api-key"] == GEMINI_CHANNEL_KEY


READ_FILE = call_directive("read_file", {"file_path": "canary.txt"})


def test_gemini_cli_tool_turn_on_a_gemini_channel(stack, workdir):
    bill = Bill(stack.tollgate)
    r = gemini(stack, workdir, READ_FILE)
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == ("gemini-2.5-flash", "gemini", 30, 10, 0, 6, False)
    assert usage(answer) == ("gemini-2.5-flash", "gemini", 30, 10, 0, 8, False)
    assert (nanos(call), nanos(answer)) == (24_750, 29_750)
    assert bill.spent_since(54_500) == 54_500
    sent = json.loads(stack.native.last().body)
    responses = [p["functionResponse"] for c in sent["contents"] for p in c.get("parts", [])
                 if "functionResponse" in p]
    assert CANARY in json.dumps(responses[-1])


# -- Every CLI on every other channel type ----------------------------------------
#
# Each CLI on the channels that serve its format by translation, so through
# the Chat pivot where neither side speaks Chat: Gemini CLI on a chat host
# (Gemini -> Chat) and on Anthropic (Gemini -> Chat -> Anthropic); Codex on
# Anthropic and on Gemini (Responses -> Chat -> either); Claude Code on
# Gemini (Anthropic -> Chat -> Gemini). The same checks as above: the exact
# answer, the tokens metered from the upstream's own usage, the exact bill,
# the channel's key upstream, and the tool's result in the next turn.


@dataclass(frozen=True)
class Channel:
    """What a channel's mock meters (input, cached input, cache write,
    output) and what that costs in nano-USD: a plain 3-word answer, a
    directed tool call, and the 5-word answer that quotes the tool."""

    name: str
    model: str
    plain: tuple[int, int, int, int]
    plain_nanos: int
    call: tuple[int, int, int, int]
    call_nanos: int
    answer: tuple[int, int, int, int]
    answer_nanos: int


CHANNELS = {
    # Anthropic's input excludes the cache reads and writes; the call
    # carries no cache figures, the mock's tool_use costs 7 output tokens.
    "claude": Channel("claude", "claude-sonnet-4-6",
                      (30, 200, 50, 3), 382_500, (30, 0, 0, 7), 195_000, (30, 200, 50, 5), 412_500),
    # OpenAI's 21 prompt tokens include the 5 cached ones; a call is no words.
    "compatible": Channel("compatible", "deepseek-chat",
                          (16, 5, 0, 3), 7_970, (16, 5, 0, 0), 4_670, (16, 5, 0, 5), 10_170),
    # 40 prompt tokens of which 10 cached; words + 3 thought tokens, a call 6.
    "gemini": Channel("gemini", "gemini-2.5-flash",
                      (30, 10, 0, 6), 24_750, (30, 10, 0, 6), 24_750, (30, 10, 0, 8), 29_750),
}


def upstream_got(stack: Stack, channel: str):
    """The last request the channel's mock got, checked for the channel's
    key on the channel's own endpoint."""
    if channel == "compatible":
        got = stack.openai.last()
        assert got.path == "/v1/chat/completions"
        assert got.headers["authorization"] == f"Bearer {COMPATIBLE_CHANNEL_KEY}"
    elif channel == "claude":
        got = stack.native.last()
        assert got.path.split("?")[0] == "/v1/messages"
        assert got.headers["x-api-key"] == ANTHROPIC_CHANNEL_KEY
    else:
        got = stack.native.last()
        assert got.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        assert got.headers["x-goog-api-key"] == GEMINI_CHANNEL_KEY
    return got.json()


def tool_results(channel: str, sent: dict) -> list:
    """The tool results in a request of the channel's format."""
    if channel == "compatible":
        return [m["content"] for m in sent["messages"] if m["role"] == "tool"]
    if channel == "claude":
        return [b for m in sent["messages"] if isinstance(m["content"], list)
                for b in m["content"] if b.get("type") == "tool_result"]
    return [p["functionResponse"] for c in sent["contents"] for p in c.get("parts", [])
            if "functionResponse" in p]


def ask(agent: str, stack: Stack, project: Path, prompt: str, model: str) -> Run:
    if agent == "claude-code":
        return claude(stack, project, prompt, model, "ANTHROPIC_API_KEY")
    if agent == "codex":
        return codex(stack, project, prompt, model)
    return gemini(stack, project, prompt, model)


def tool_prompt(agent: str, project: Path) -> str:
    if agent == "claude-code":
        return call_directive("Read", {"file_path": str(project / "canary.txt")})
    return CAT if agent == "codex" else READ_FILE


TRANSLATED = [
    ("gemini-cli", "compatible"),
    ("gemini-cli", "claude"),
    ("codex", "claude"),
    ("codex", "gemini"),
    ("claude-code", "gemini"),
]
CELL_IDS = [f"{agent}-on-{channel}" for agent, channel in TRANSLATED]


@pytest.mark.parametrize("agent,channel", TRANSLATED, ids=CELL_IDS)
def test_cli_through_translation(stack, workdir, agent, channel):
    ch = CHANNELS[channel]
    bill = Bill(stack.tollgate)
    r = ask(agent, stack, workdir, "Hello there", ch.model)
    assert r.answer == "echo: Hello there"
    [m] = bill.since(1)
    assert usage(m) == (ch.model, ch.name, *ch.plain, False)
    assert nanos(m) == ch.plain_nanos
    assert bill.spent_since(ch.plain_nanos) == ch.plain_nanos
    upstream_got(stack, channel)


@pytest.mark.parametrize("agent,channel", TRANSLATED, ids=CELL_IDS)
def test_cli_tool_turn_through_translation(stack, workdir, agent, channel):
    ch = CHANNELS[channel]
    bill = Bill(stack.tollgate)
    r = ask(agent, stack, workdir, tool_prompt(agent, workdir), ch.model)
    assert r.answer == TOOL_ANSWER
    call, answer = bill.since(2)
    assert usage(call) == (ch.model, ch.name, *ch.call, False)
    assert usage(answer) == (ch.model, ch.name, *ch.answer, False)
    assert (nanos(call), nanos(answer)) == (ch.call_nanos, ch.answer_nanos)
    total = ch.call_nanos + ch.answer_nanos
    assert bill.spent_since(total) == total
    results = tool_results(channel, upstream_got(stack, channel))
    assert len(results) == 1 and CANARY in json.dumps(results[0])
