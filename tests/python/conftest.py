"""Fixtures for the end-to-end tests: official SDKs -> tollgate -> mock upstream.

Generic building blocks (reuse them for other providers):

- ``start_tollgate(config_rest, env=None) -> Tollgate`` (function scope) and
  ``start_tollgate_module`` (module scope): start the real binary on
  ``harness.server_section(...)`` + ``config_rest`` (groups, models,
  channels, keys), wait until it is ready, stop it after the test / module.
  ``Tollgate`` has ``url(path)``, ``admin_url(path)``, ``log()``,
  ``config_path``, ``process``. See harness.py; ``harness.sha256_hex(secret)``
  makes ``key_sha256`` values.
- ``mock_openai`` (module scope): a started ``mock_openai.MockOpenAI``,
  reset before every test that uses it (recorded requests, scripted
  failures, stream hold).

The OpenAI stack:

- ``openai_gateway`` (module scope): ``mock_openai`` behind tollgate with
  ``OPENAI_CONFIG``; fields ``tollgate``, ``mock``, ``client_key`` (the
  key the SDK presents) and ``channel_key`` (what upstream must receive).
- ``private_openai_gateway`` (function scope): the same stack, new for one
  test that leaves state behind (e.g. a channel in cooldown).
  ``Gateway.client(api_key=None)`` makes an SDK client for either.
- ``openai_client``: an ``openai.OpenAI`` pointed at ``openai_gateway``,
  ``max_retries=0`` so every failure is visible.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Tollgate, sha256_hex  # noqa: E402
from mock_openai import MockOpenAI  # noqa: E402

StartTollgate = Callable[..., Tollgate]


class _Starter:
    """Starts tollgates and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[Tollgate] = []

    def __call__(self, config_rest: str, env: dict[str, str] | None = None) -> Tollgate:
        t = Tollgate.start(config_rest, env)
        self.started.append(t)
        return t

    def stop_all(self) -> None:
        for t in self.started:
            t.stop()


@pytest.fixture
def start_tollgate() -> Iterator[StartTollgate]:
    starter = _Starter()
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def start_tollgate_module() -> Iterator[StartTollgate]:
    starter = _Starter()
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def _mock_openai_server() -> Iterator[MockOpenAI]:
    mock = MockOpenAI().start()
    yield mock
    mock.stop()


@pytest.fixture
def mock_openai(_mock_openai_server: MockOpenAI) -> MockOpenAI:
    _mock_openai_server.reset()
    return _mock_openai_server


CLIENT_KEY = "sk-e2e-client-openai"
CHANNEL_KEY = "sk-e2e-upstream-channel"
UPSTREAM_GPT_4O = "gpt-4o-2024-08-06"


def openai_config(base_url: str) -> str:
    """Group ``default`` served by the mock OpenAI upstream (``gpt-4o`` is
    mapped to a dated upstream name); group ``premium`` serves ``o3`` from an
    in-process mock channel, outside the client key's groups."""
    return f"""
[[groups]]
name = "default"
ratio = 1.0

[[groups]]
name = "premium"
ratio = 2.0

[[models]]
name = "gpt-4o"
input = 2.5
output = 10

[[models]]
name = "gpt-4o-mini"
input = 0.15
output = 0.6

[[models]]
name = "text-embedding-3-small"
input = 0.02

[[models]]
name = "o3"
input = 2
output = 8

[[channels]]
name = "mock-openai"
type = "openai"
base_url = "{base_url}"
api_key = "{CHANNEL_KEY}"
groups = ["default"]
models = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
model_map = {{ "gpt-4o" = "{UPSTREAM_GPT_4O}" }}

[[channels]]
name = "in-process"
type = "mock"
groups = ["premium"]
models = ["o3"]

[[keys]]
name = "e2e-openai"
key_sha256 = "{sha256_hex(CLIENT_KEY)}"
groups = ["default"]
"""


@dataclass
class Gateway:
    tollgate: Tollgate
    mock: MockOpenAI
    client_key: str
    channel_key: str

    def client(self, api_key: str | None = None):
        """An ``openai.OpenAI`` on this tollgate, ``max_retries=0``."""
        import openai

        return openai.OpenAI(
            base_url=self.tollgate.url("/v1"),
            api_key=api_key or self.client_key,
            max_retries=0,
            timeout=20,
        )


@pytest.fixture(scope="module")
def openai_gateway(
    _mock_openai_server: MockOpenAI, start_tollgate_module: StartTollgate
) -> Gateway:
    tollgate = start_tollgate_module(openai_config(_mock_openai_server.base_url))
    return Gateway(tollgate, _mock_openai_server, CLIENT_KEY, CHANNEL_KEY)


@pytest.fixture
def private_openai_gateway(start_tollgate: StartTollgate) -> Iterator[Gateway]:
    """A stack of its own, for tests that leave state behind (a channel in
    cooldown, a spent budget) that must not leak into other tests."""
    mock = MockOpenAI().start()
    try:
        yield Gateway(start_tollgate(openai_config(mock.base_url)), mock, CLIENT_KEY, CHANNEL_KEY)
    finally:
        mock.stop()


@pytest.fixture
def openai_client(openai_gateway: Gateway, mock_openai: MockOpenAI):
    client = openai_gateway.client()
    yield client
    client.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keeps each phase's report on the test item (``item.rep_call``), so
    that a fixture's teardown can tell whether the test failed (the browser
    tests keep a screenshot then)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
