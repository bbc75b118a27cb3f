"""What the mock upstreams answer an agent CLI (``tools="directed"``).

Agent CLIs (Claude Code, Codex, Gemini CLI) send dozens of tools and put
their own context (environment, reminders) in parts of the user's message
before the user's words. A mock that calls the first tool it is offered,
or echoes the whole message, cannot be asserted on; in directed mode the
mocks answer the turn this way instead, in every wire format:

- the last turn brought tool results (after the model's last answer): the
  answer is ``"tool said: " + <the last result from RESULT_MARKER to the
  end of its line>`` (each CLI wraps a tool's output in its own way: line
  numbers, chunk ids, reminders), else the result's first non-empty line;
- the user's words (the last text part of the last user message) read
  ``CALL <tool> <json arguments>`` and the request offers that tool: the
  answer is a call of it with those arguments (the mock's usual call id);
- otherwise the answer is ``"echo: " + <the user's words>``.

``AgentTurn.text`` is the answer's text, ``AgentTurn.call`` the tool call
``(name, arguments as a JSON string)`` or None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

DIRECTIVE = "CALL "
RESULT_MARKER = "tollgate-canary"


@dataclass(frozen=True)
class AgentTurn:
    text: str
    call: tuple[str, str] | None = None


def call_directive(tool: str, arguments: dict) -> str:
    """The prompt that makes a directed mock call ``tool``."""
    return f"{DIRECTIVE}{tool} {json.dumps(arguments)}"


def quoted(result: str) -> str:
    """What the mock quotes of a tool result."""
    for line in result.splitlines():
        at = line.find(RESULT_MARKER)
        if at >= 0:
            return line[at:].strip()
    for line in result.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _last_text(content, text_types: tuple[str, ...]) -> str:
    """The last text part of a message's content (a string or parts)."""
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content or [] if p.get("type") in text_types]
    return texts[-1] if texts else ""


def _turn(words: str, results: list[str], offered: list[str]) -> AgentTurn:
    if results:
        return AgentTurn("tool said: " + quoted(results[-1]))
    if words.startswith(DIRECTIVE):
        name, _, arguments = words[len(DIRECTIVE):].partition(" ")
        if name in offered:
            return AgentTurn("", (name, json.dumps(json.loads(arguments or "{}"))))
    return AgentTurn("echo: " + words)


def _after_last(items: list, is_model: Callable[[Any], bool]) -> list:
    """The items after the model's last one (the current turn)."""
    last = max((i for i, item in enumerate(items) if is_model(item)), default=-1)
    return items[last + 1:]


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def chat_turn(body: dict) -> AgentTurn:
    turn = _after_last(body.get("messages") or [], lambda m: m.get("role") == "assistant")
    results = [_text_of(m.get("content")) for m in turn if m.get("role") == "tool"]
    users = [m for m in turn if m.get("role") == "user"]
    words = _last_text(users[-1].get("content"), ("text",)) if users else ""
    offered = [t["function"]["name"] for t in body.get("tools") or [] if t.get("type") == "function"]
    return _turn(words, results, offered)


def responses_turn(body: dict) -> AgentTurn:
    items = body.get("input", "")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    turn = _after_last(
        items, lambda i: i.get("role") == "assistant" or i.get("type") == "function_call"
    )
    results = [_text_of(i.get("output")) for i in turn if i.get("type") == "function_call_output"]
    users = [i for i in turn if i.get("role") == "user"]
    words = _last_text(users[-1].get("content"), ("input_text",)) if users else ""
    offered = [t.get("name") for t in body.get("tools") or [] if t.get("type") == "function"]
    return _turn(words, results, offered)


def anthropic_turn(body: dict) -> AgentTurn:
    turn = _after_last(body.get("messages") or [], lambda m: m.get("role") == "assistant")
    results, words = [], ""
    for m in turn:
        content = m.get("content")
        if m.get("role") != "user":
            continue
        words = _last_text(content, ("text",))
        if isinstance(content, list):
            results += [
                _text_of(b.get("content", "")) for b in content if b.get("type") == "tool_result"
            ]
    offered = [t.get("name") for t in body.get("tools") or []]
    return _turn(words, results, offered)


def gemini_turn(body: dict) -> AgentTurn:
    turn = _after_last(body.get("contents") or [], lambda c: c.get("role") == "model")
    results, words = [], ""
    for c in turn:
        parts = c.get("parts") or []
        texts = [p["text"] for p in parts if "text" in p]
        if texts:
            words = texts[-1]
        for p in parts:
            if "functionResponse" in p:
                response = p["functionResponse"].get("response", {})
                # Google documents "output"; "result" is what the genai SDKs
                # (and tollgate, from other formats) put a text under.
                output = response
                if isinstance(response, dict):
                    output = response.get("output", response.get("result", response))
                results.append(output if isinstance(output, str) else json.dumps(output))
    offered = [
        d.get("name")
        for tool in body.get("tools") or []
        for d in tool.get("functionDeclarations") or []
    ]
    return _turn(words, results, offered)
