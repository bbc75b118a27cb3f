"""Mock Anthropic and Gemini upstreams on 127.0.0.1, speaking the real wire
formats (the Messages API with its SSE event sequence; the Gemini API with
``usageMetadata`` and ``alt=sse`` streams), also as the clouds serve them:
Bedrock InvokeModel / InvokeModelWithResponseStream (AWS event-stream
frames wrapping base64 Anthropic events) and Vertex AI (Gemini paths under
``/v1/projects/...``, with an OAuth2 token endpoint at ``/token`` that
issues ``VERTEX_TOKEN``).

Answers are deterministic so tests can assert exact values:

- the reply text is ``"echo: " + <last user text>``, streamed one word
  (with its leading space) per event;
- Anthropic usage: ``input_tokens = ANTHROPIC_INPUT``, cache reads
  ``ANTHROPIC_CACHE_READ``, cache writes ``ANTHROPIC_CACHE_WRITE``,
  ``output_tokens`` = number of words; count_tokens: ``ANTHROPIC_COUNT``.
  A test may set ``mock.anthropic_usage`` to report another input side
  (e.g. a long context, or ``cache_creation`` by lifetime); streams then
  repeat its counts, without ``cache_creation``, in ``message_delta`` as
  newer API versions do. ``reset()`` puts the default back;
- Gemini usage: ``promptTokenCount = GEMINI_PROMPT`` of which
  ``GEMINI_CACHED`` cached, ``candidatesTokenCount`` = number of words,
  ``thoughtsTokenCount = GEMINI_THOUGHTS``; countTokens: ``GEMINI_COUNT``.
- Gemini refuses what Google's API refuses (``gemini_problem``: unknown
  fields, roles, empty parts, OpenAPI-style ``parameters`` with JSON Schema
  keywords, function responses that do not match the calls before them)
  and, like Gemini 3, a function call in the history without the
  ``thoughtSignature`` it was answered with. With function declarations and
  a user turn last it calls the first function (``{"city": "Paris"}``,
  signed ``GEMINI_SIGNATURE``, after a thought); after function responses
  it answers ``"tool said: <result>"``. Streams are SSE with ``alt=sse``,
  one JSON array without, as Google streams.
- A directed ``functionCall`` answer: ``GEMINI_CALL_TOKENS`` out, no thoughts.
- Imagen ``:predict``: ``parameters.sampleCount`` 1x1 PNGs as
  ``predictions[].bytesBase64Encoded``, no usage.
- With ``generationConfig.responseModalities`` holding ``"IMAGE"``, Gemini
  image models' answer: a text part and a 1x1 PNG as ``inlineData``, with
  ``promptTokenCount = GEMINI_PROMPT`` and ``candidatesTokenCount`` =
  ``GEMINI_IMAGE_TOKENS`` image + ``GEMINI_IMAGE_TEXT_TOKENS`` text tokens
  (``candidatesTokensDetails`` by modality).

``MockNative(tools="directed")`` answers agent CLIs instead: see
``agent_turns`` (a ``tool_use`` block, or a Gemini ``functionCall`` part,
only when the user's words ask for one).

Every request is recorded (``mock.requests``: method, full path with query,
lower-cased headers, raw body). ``mock.fail_next(status, body)`` makes the
next request answer that error instead.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent_turns import anthropic_turn, gemini_turn
from mock_openai import PNG, Received, words

ANTHROPIC_INPUT = 30
ANTHROPIC_CACHE_READ = 200
ANTHROPIC_CACHE_WRITE = 50
ANTHROPIC_COUNT = 17
GEMINI_PROMPT = 40
GEMINI_CACHED = 10
GEMINI_THOUGHTS = 3
GEMINI_IMAGE_TOKENS = 1290
GEMINI_IMAGE_TEXT_TOKENS = 4
GEMINI_COUNT = 23
# Output tokens of a directed functionCall answer.
GEMINI_CALL_TOKENS = 6
VERTEX_TOKEN = "ya29.e2e-vertex-token"
# Opaque, and with the characters base64 has beyond ids' (+ / =).
GEMINI_SIGNATURE = base64.b64encode(b"\xfb\xff\xbfmock-thought-signature").decode()
GEMINI_TOOL_ARGS = {"city": "Paris"}


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and header lengths, CRC),
    string headers, payload, message CRC."""
    encoded = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_chunk(event: dict) -> bytes:
    data = base64.b64encode(json.dumps(event).encode()).decode()
    return event_frame(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
        json.dumps({"bytes": data}).encode(),
    )


def anthropic_text(body: dict) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") != "user":
            continue
        content = m.get("content", "")
        if isinstance(content, str):
            return "echo: " + content
        return "echo: " + " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return "echo: "


ANTHROPIC_TOOL_ID = "toolu_mock1"
ANTHROPIC_TOOL_INPUT = {"city": "Paris"}


def anthropic_problem(body: dict) -> str | None:
    """What the real Messages API would refuse in ``body``."""
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1]["role"] == m["role"]:
            return "messages: roles must alternate between \"user\" and \"assistant\""
    if messages[0]["role"] != "user":
        return "messages: first message must use the \"user\" role"
    return None


def anthropic_tool_turn(body: dict) -> str | None:
    """With ``tools`` and a plain user turn last, the mock calls the first
    tool (its name); after a ``tool_result`` it answers in text."""
    tools = body.get("tools") or []
    last = body["messages"][-1]
    content = last.get("content")
    has_result = isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
    if tools and last["role"] == "user" and not has_result:
        return tools[0]["name"]
    return None


def anthropic_tool_result(body: dict) -> str | None:
    content = body["messages"][-1].get("content")
    if not isinstance(content, list):
        return None
    for block in content:
        if block.get("type") == "tool_result":
            inner = block.get("content", "")
            if not isinstance(inner, str):
                inner = " ".join(b.get("text", "") for b in inner)
            return "tool said: " + inner
    return None


def gemini_text(body: dict) -> str:
    last = body["contents"][-1]
    responses = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
    if responses:
        results = [r["response"].get("result", json.dumps(r["response"])) for r in responses]
        return "tool said: " + " ".join(str(r) for r in results)
    for c in reversed(body.get("contents", [])):
        if c.get("role", "user") == "user":
            return "echo: " + " ".join(p.get("text", "") for p in c.get("parts", []))
    return "echo: "


GEMINI_FIELDS = {"model", "contents", "systemInstruction", "tools", "toolConfig",
                 "generationConfig", "safetySettings", "cachedContent", "labels"}
GEMINI_CONFIG_FIELDS = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
    "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP",
    "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
    "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution",
    "imageConfig",
}
GEMINI_PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse",
                    "executableCode", "codeExecutionResult"}
GEMINI_PART_FIELDS = GEMINI_PART_DATA | {"thought", "thoughtSignature", "videoMetadata",
                                         "partMetadata", "mediaResolution"}
# What Gemini's OpenAPI-style Schema knows; JSON Schema's other keywords
# (additionalProperties, $schema, ...) are refused there.
GEMINI_SCHEMA_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
    "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
    "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
}


def schema_problem(schema: Any, at: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key not in GEMINI_SCHEMA_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}" at \'{at}\': Cannot find field.'
        children = value.values() if key == "properties" and isinstance(value, dict) else (
            [value] if key == "items" else value if key == "anyOf" else [])
        for child in children:
            problem = schema_problem(child, at)
            if problem:
                return problem
    return None


def gemini_problem(body: dict) -> str | None:
    """What Google's generateContent would refuse in ``body``."""
    for key in body:
        if key not in GEMINI_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    for key in body.get("generationConfig") or {}:
        if key not in GEMINI_CONFIG_FIELDS:
            return (f'Invalid JSON payload received. Unknown name "{key}" at '
                    f"'generation_config': Cannot find field.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    calls_before = 0
    for i, c in enumerate(contents):
        if c.get("role", "user") not in ("user", "model"):
            return f"Please use a valid role: user, model. (contents[{i}])"
        parts = c.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for j, p in enumerate(parts):
            unknown = set(p) - GEMINI_PART_FIELDS
            if unknown:
                return f'Invalid JSON payload received. Unknown name "{unknown.pop()}" at \'contents[{i}].parts[{j}]\''
            if len(set(p) & GEMINI_PART_DATA) != 1:
                return f"contents[{i}].parts[{j}]: a part must hold exactly one kind of data"
            for kind, known in (("functionCall", {"id", "name", "args"}),
                                ("functionResponse", {"id", "name", "response"})):
                unknown = set(p.get(kind, {})) - known
                if unknown:
                    return (f'Invalid JSON payload received. Unknown name "{unknown.pop()}" at '
                            f"'contents[{i}].parts[{j}].{kind}': Cannot find field.")
            if "functionCall" in p and not isinstance(p["functionCall"].get("args", {}), dict):
                return f"contents[{i}].parts[{j}].function_call.args: must be an object"
            if "functionResponse" in p and not isinstance(p["functionResponse"].get("response"), dict):
                return f"contents[{i}].parts[{j}].function_response.response: must be an object"
        calls = [p for p in parts if "functionCall" in p]
        if c.get("role") == "model" and calls and calls[0].get("thoughtSignature") != GEMINI_SIGNATURE:
            return (f"Function call is missing a thought_signature in functionCall parts. "
                    f"(contents[{i}].parts)")
        responses = sum(1 for p in parts if "functionResponse" in p)
        if responses and responses != calls_before:
            return ("Please ensure that the number of function response parts is equal to "
                    "the number of function call parts of the function call turn.")
        calls_before = len(calls)
    for t, tool in enumerate(body.get("tools") or []):
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            at = f"tools[{t}].function_declarations[{d}]"
            if not declaration.get("name"):
                return f"* GenerateContentRequest.{at}.name: Name cannot be empty."
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return f"{at}: only one of parameters and parametersJsonSchema may be set"
            problem = schema_problem(declaration.get("parameters"), f"{at}.parameters")
            if problem:
                return problem
    return None


def gemini_call(body: dict) -> str | None:
    """With function declarations and a plain user turn last, the function
    the mock calls: the first declared."""
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    last = body["contents"][-1]
    answered = any("functionResponse" in p for p in last["parts"])
    if declarations and last.get("role", "user") == "user" and not answered:
        return declarations[0]["name"]
    return None


class MockNative:
    """Serves both APIs on one port: /v1/messages* and /v1beta/models/*."""

    def __init__(self, tools: str = "first") -> None:
        # "first": call the first tool offered; "directed": see agent_turns.
        assert tools in ("first", "directed"), tools
        self.tools = tools
        self.requests: list[Received] = []
        self._failures: list[tuple[int, dict]] = []
        self.anthropic_usage: dict | None = None
        # Overrides the prompt side of Gemini's usageMetadata
        # (``promptTokenCount``, ``cachedContentTokenCount``).
        self.gemini_prompt: dict | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "MockNative":
        mock = self

        class Handler(_Handler):
            owner = mock

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self.anthropic_usage = None
            self.gemini_prompt = None

    def fail_next(self, status: int, body: dict) -> None:
        """The next request answers ``status`` with ``body``."""
        with self._lock:
            self._failures.append((status, body))

    def last(self) -> Received:
        with self._lock:
            assert self.requests, "the mock received no request"
            return self.requests[-1]

    def _record(self, r: Received) -> tuple[int, dict] | None:
        with self._lock:
            self.requests.append(r)
            return self._failures.pop(0) if self._failures else None


class _Handler(BaseHTTPRequestHandler):
    owner: MockNative
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        failure = self.owner._record(
            Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
        )
        if failure is not None:
            self._json(failure[1], status=failure[0])
            return
        path = self.path.split("?", 1)[0]
        if path == "/token":
            self._json({"access_token": VERTEX_TOKEN, "expires_in": 3599, "token_type": "Bearer"})
            return
        body = json.loads(raw)
        if path.endswith("/v1/messages"):
            self._messages(body)
        elif path.startswith("/model/") and path.endswith("/invoke"):
            self._messages({**body, "model": path.split("/")[2]})
        elif path.startswith("/model/") and path.endswith("/invoke-with-response-stream"):
            self._messages({**body, "model": path.split("/")[2], "stream": True}, bedrock=True)
        elif path.endswith("/v1/messages/count_tokens"):
            self._json({"input_tokens": ANTHROPIC_COUNT})
        elif path.endswith(":countTokens"):
            self._json({"totalTokens": GEMINI_COUNT})
        elif path.endswith(":generateContent"):
            self._gemini(body, stream=False)
        elif path.endswith(":streamGenerateContent"):
            self._gemini(body, stream=True, sse="alt=sse" in self.path.split("?", 1)[-1].split("&"))
        elif path.endswith(":predict"):
            self._imagen(body)
        else:
            self._json({"error": {"message": f"unknown path {path}"}}, status=404)

    # -- framing -----------------------------------------------------------

    def _json(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, events: list[str], content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for e in events:
            data = e.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- Anthropic ---------------------------------------------------------

    def _frames(self, frames: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for f in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(f), f))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _messages(self, body: dict, bedrock: bool = False) -> None:
        problem = anthropic_problem(body)
        if problem:
            self._json({"type": "error", "error": {"type": "invalid_request_error", "message": problem}}, status=400)
            return
        if self.owner.tools == "directed":
            turn = anthropic_turn(body)
            if turn.call:
                self._tool_use(body, turn.call[0], json.loads(turn.call[1]))
                return
            pieces = words(turn.text)
        else:
            tool = anthropic_tool_turn(body)
            if tool:
                self._tool_use(body, tool)
                return
            pieces = words(anthropic_tool_result(body) or anthropic_text(body))
        usage = self.owner.anthropic_usage or {
            "input_tokens": ANTHROPIC_INPUT,
            "cache_creation_input_tokens": ANTHROPIC_CACHE_WRITE,
            "cache_read_input_tokens": ANTHROPIC_CACHE_READ,
        }
        final_usage = {"output_tokens": len(pieces)}
        if self.owner.anthropic_usage:
            final_usage.update({k: v for k, v in usage.items() if k != "cache_creation"})
        message = {
            "id": "msg_mock01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if not body.get("stream"):
            self._json(
                {
                    **message,
                    "content": [{"type": "text", "text": "".join(pieces)}],
                    "stop_reason": "end_turn",
                    "usage": {**usage, "output_tokens": len(pieces)},
                }
            )
            return
        events = [
            ("message_start", {"type": "message_start",
                               "message": {**message, "content": [], "usage": {**usage, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": final_usage}),
            ("message_stop", {"type": "message_stop"}),
        ]
        if bedrock:
            self._frames([bedrock_chunk(data) for _, data in events if data["type"] != "ping"])
            return
        self._stream([f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events])

    def _tool_use(self, body: dict, tool: str, tool_input: dict | None = None) -> None:
        """A ``tool_use`` answer, streamed with its input in two pieces."""
        tool_input = ANTHROPIC_TOOL_INPUT if tool_input is None else tool_input
        usage = {"input_tokens": ANTHROPIC_INPUT, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        block = {"type": "tool_use", "id": ANTHROPIC_TOOL_ID, "name": tool}
        message = {"id": "msg_mock02", "type": "message", "role": "assistant",
                   "model": body["model"], "stop_sequence": None}
        if not body.get("stream"):
            self._json({**message, "content": [{**block, "input": tool_input}],
                        "stop_reason": "tool_use", "usage": {**usage, "output_tokens": 7}})
            return
        arguments = json.dumps(tool_input)
        half = len(arguments) // 2
        events = [
            ("message_start", {"type": "message_start", "message": {
                **message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {**block, "input": {}}}),
        ]
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "input_json_delta", "partial_json": part}})
            for part in (arguments[:half], arguments[half:])
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                               "usage": {"output_tokens": 7}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._stream([f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events])

    # -- Gemini ------------------------------------------------------------

    def _gemini(self, body: dict, stream: bool, sse: bool = False) -> None:
        problem = gemini_problem(body)
        if problem:
            self._json({"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}},
                       status=400)
            return
        if "IMAGE" in ((body.get("generationConfig") or {}).get("responseModalities") or []):
            self._gemini_image(stream, sse)
            return
        text = None
        if self.owner.tools == "directed":
            turn = gemini_turn(body)
            if turn.call:
                self._gemini_call(turn.call, stream, sse)
                return
            text = turn.text or ""
            call = None
        else:
            call = gemini_call(body)

        def chunk(parts: list, candidates: int, last: bool) -> dict:
            candidate: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if last:
                candidate["finishReason"] = "STOP"
            prompt = self.owner.gemini_prompt or {
                "promptTokenCount": GEMINI_PROMPT, "cachedContentTokenCount": GEMINI_CACHED}
            usage = {
                **prompt,
                "totalTokenCount": prompt["promptTokenCount"] + candidates
                + (GEMINI_THOUGHTS if last else 0),
            }
            if candidates:
                usage["candidatesTokenCount"] = candidates
            if last:
                usage["thoughtsTokenCount"] = GEMINI_THOUGHTS
            return {"candidates": [candidate], "usageMetadata": usage,
                    "modelVersion": "gemini-2.5-flash", "responseId": "mock-response"}

        if call:
            thought = {"text": "I should call the tool.", "thought": True}
            signed = {"functionCall": {"name": call, "args": GEMINI_TOOL_ARGS},
                      "thoughtSignature": GEMINI_SIGNATURE}
            chunks = [chunk([thought], 0, False), chunk([signed], GEMINI_CALL_TOKENS, True)]
        else:
            pieces = words(gemini_text(body) if text is None else text)
            n = len(pieces)
            chunks = [chunk([{"text": p}], n if i == n - 1 else 0, i == n - 1)
                      for i, p in enumerate(pieces)]
        if not stream:
            whole = chunks[-1]
            parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
            if not call:
                parts = [{"text": "".join(p["text"] for p in parts)}]
            whole["candidates"][0]["content"]["parts"] = parts
            self._json(whole)
        elif sse:
            self._stream([f"data: {json.dumps(c)}\r\n\r\n" for c in chunks])
        else:
            # Without alt=sse Google streams one JSON array, element by element.
            self._stream(["[" + json.dumps(chunks[0])] + ["," + json.dumps(c) for c in chunks[1:]] + ["]"],
                         content_type="application/json")

    def _imagen(self, body: dict) -> None:
        """Imagen's ``:predict``: ``sampleCount`` PNGs, no token usage."""
        params = body.get("parameters") or {}
        if set(params) - {"sampleCount", "aspectRatio", "personGeneration", "safetySetting"}:
            self._json({"error": {"code": 400, "message": "unknown parameter", "status": "INVALID_ARGUMENT"}},
                       status=400)
            return
        image = {"bytesBase64Encoded": base64.b64encode(PNG).decode(), "mimeType": "image/png"}
        self._json({"predictions": [image] * int(params.get("sampleCount", 1))})

    def _gemini_image(self, stream: bool, sse: bool) -> None:
        out = GEMINI_IMAGE_TOKENS + GEMINI_IMAGE_TEXT_TOKENS
        answer = {
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Here is your image."},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}},
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {
                "promptTokenCount": GEMINI_PROMPT, "candidatesTokenCount": out,
                "totalTokenCount": GEMINI_PROMPT + out,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": GEMINI_PROMPT}],
                "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": GEMINI_IMAGE_TOKENS},
                                            {"modality": "TEXT", "tokenCount": GEMINI_IMAGE_TEXT_TOKENS}],
            },
            "modelVersion": "gemini-2.5-flash-image", "responseId": "mock-image",
        }
        if not stream:
            self._json(answer)
        elif sse:
            self._stream([f"data: {json.dumps(answer)}\r\n\r\n"])
        else:
            self._stream(["[" + json.dumps(answer) + "]"], content_type="application/json")

    def _gemini_call(self, call: tuple[str, str], stream: bool, sse: bool) -> None:
        """A ``functionCall`` part, whole (Gemini streams a call in one chunk)."""
        name, arguments = call
        answer = {
            "candidates": [{
                "content": {"parts": [{"functionCall": {"name": name, "args": json.loads(arguments)},
                                       "thoughtSignature": GEMINI_SIGNATURE}],
                            "role": "model"},
                "finishReason": "STOP", "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": GEMINI_PROMPT, "cachedContentTokenCount": GEMINI_CACHED,
                              "candidatesTokenCount": GEMINI_CALL_TOKENS,
                              "totalTokenCount": GEMINI_PROMPT + GEMINI_CALL_TOKENS},
            "modelVersion": "gemini-2.5-flash", "responseId": "mock-response",
        }
        if stream and sse:
            self._stream([f"data: {json.dumps(answer)}\r\n\r\n"])
        elif stream:
            self._stream(["[" + json.dumps(answer) + "]"], content_type="application/json")
        else:
            self._json(answer)
