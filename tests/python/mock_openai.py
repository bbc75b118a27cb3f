"""A mock OpenAI upstream on 127.0.0.1 speaking the real wire format.

Endpoints (any path prefix before /v1 is accepted, so a channel's base_url
may carry one):

- POST .../chat/completions: non-stream, or SSE with one chunk per word;
  the usage chunk (``choices: []``) only when the request set
  ``stream_options.include_usage``, as OpenAI does.
- POST .../embeddings: float or base64 (the SDK's default) vectors.
- POST .../responses: non-stream, or the Responses SSE event sequence that
  ends with ``response.completed`` carrying usage.
- POST .../images/generations (JSON) and .../images/edits (multipart):
  ``n`` 1x1 PNGs as ``b64_json`` (or a ``url``) with gpt-image-1's usage:
  ``IMAGE_TEXT_TOKENS`` text tokens, ``IMAGE_INPUT_TOKENS`` per uploaded
  image, ``IMAGE_OUTPUT_TOKENS`` per image out (dall-e models: no usage).
- POST .../audio/transcriptions and .../audio/translations (multipart):
  ``TRANSCRIPT`` with the WAV upload's duration: whole seconds (rounded
  up) in ``usage`` for ``json``, exact ``duration`` for ``verbose_json``,
  none for ``text``.
- POST .../audio/speech: ``mock.speech_bytes`` bytes of audio/mpeg, sent
  in 64 KiB chunks as they are made (never held whole).
- POST .../moderations (no usage, as OpenAI) and .../rerank (Jina-style
  ``usage.total_tokens`` = ``RERANK_TOKENS``).

Answers are deterministic so that tests can assert exact values:

- the reply text is ``"echo: " + <last user text>`` (see ``reply_text``);
- usage: ``prompt_tokens = PROMPT_TOKENS``, ``completion_tokens`` = number
  of words of the reply, ``cached_tokens = CACHED_TOKENS``;
- embeddings: ``embedding_for(i)`` for the i-th input.

``MockOpenAI(tools="directed")`` answers agent CLIs instead: see
``agent_turns`` (a tool call only when the user's words ask for one, in
chat completions and in responses, where the call is a ``function_call``
item).

Every request is recorded (``mock.requests``) with its method, path,
lower-cased headers and raw body. ``mock.fail_next(status, ...)`` makes the
next request(s) answer an error instead, and ``mock.hold_stream`` (a
``threading.Event``) keeps a stream open before its final events until the
test sets it, to prove events reach the client as they are produced
(``hold_expired`` turns true if nobody released it in time).
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent_turns import AgentTurn, chat_turn, responses_turn

PROMPT_TOKENS = 21
CACHED_TOKENS = 5
IMAGE_TEXT_TOKENS = 37
IMAGE_INPUT_TOKENS = 194
IMAGE_OUTPUT_TOKENS = 1056
TRANSCRIPT = "The quick brown fox jumps over the lazy dog."
RERANK_TOKENS = 42
# A valid 1x1 RGBA PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGPQqr/yHwAE0QJ9PWShagAAAABJRU5ErkJggg=="
)
EMBEDDING_DIMENSIONS = 4
# A held stream goes on after this long even if the test never releases it
# (then ``hold_expired`` is set: the client did not see the first events).
HOLD_TIMEOUT = 5.0


def reply_text(body: dict) -> str:
    """The deterministic answer to a chat/completions or responses body."""
    return "echo: " + last_user_text(body)


def last_user_text(body: dict) -> str:
    if "messages" in body:
        items = body["messages"]
    else:
        items = body.get("input", "")
        if isinstance(items, str):
            return items
    for item in reversed(items):
        if item.get("role", "user") != "user":
            continue
        content = item.get("content", "")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content)
    return ""


TOOL_CALL_ID = "call_mock1"
TOOL_ARGUMENTS = '{"city": "Paris"}'
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


def chat_problem(body: dict) -> str | None:
    """What the real Chat Completions API would refuse in ``body``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: expected a non-empty array"
    for i, m in enumerate(messages):
        if m.get("role") not in CHAT_ROLES:
            return f"messages[{i}].role: invalid value {m.get('role')!r}"
        if m["role"] == "tool" and not m.get("tool_call_id"):
            return f"messages[{i}].tool_call_id: required for role 'tool'"
    return None


def tool_turn(body: dict) -> tuple[str, str] | None:
    """With ``tools`` and a user message last, the mock calls the first tool:
    ``(name, arguments)``. After a tool result it answers in text."""
    tools = body.get("tools") or []
    messages = body.get("messages") or []
    if tools and messages and messages[-1].get("role") == "user":
        return tools[0]["function"]["name"], TOOL_ARGUMENTS
    return None


def tool_result_text(body: dict) -> str | None:
    """``"tool said: <result>"`` when the last message is a tool result."""
    messages = body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        content = messages[-1].get("content", "")
        if not isinstance(content, str):
            content = " ".join(p.get("text", "") for p in content)
        return "tool said: " + content
    return None


def words(text: str) -> list[str]:
    """Stream pieces: each word with the space that precedes it."""
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """(name, filename, content) of each part of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"')
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        disposition = next(
            line for line in head.decode().split("\r\n") if line.lower().startswith("content-disposition")
        )
        params = dict(
            p.strip().split("=", 1) for p in disposition.split(";")[1:] if "=" in p
        )
        name = params["name"].strip('"')
        filename = params.get("filename")
        parts.append((name, filename.strip('"') if filename else None, content[:-2]))
    return parts


def wav_seconds(data: bytes) -> float:
    """The duration of a canonical PCM WAV (44-byte header)."""
    byte_rate = struct.unpack("<I", data[28:32])[0]
    return (len(data) - 44) / byte_rate


def embedding_for(index: int) -> list[float]:
    """Exactly representable in float32, so base64 round-trips exactly."""
    return [index + 0.5, -0.25, 0.125 * (index + 1), 1.0]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Failure:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class MockOpenAI:
    """Start with ``MockOpenAI().start()``; stop with ``.stop()``."""

    def __init__(self, model_label: str | None = None, tools: str = "first"):
        # Upstream reports its own model name; None = echo the request's.
        self.model_label = model_label
        # "first": call the first tool offered; "directed": see agent_turns.
        assert tools in ("first", "directed"), tools
        self.tools = tools
        self.requests: list[Received] = []
        self.hold_stream: threading.Event | None = None
        # Bytes of an audio/speech answer.
        self.speech_bytes = 4096
        self.hold_expired = False
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "MockOpenAI":
        mock = self

        class Handler(_Handler):
            owner = mock

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.hold_stream is not None:
            self.hold_stream.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests answer ``status`` with an OpenAI error."""
        payload = body or {
            "error": {"message": f"mock failure {status}", "type": "server_error", "code": None}
        }
        with self._lock:
            for _ in range(times):
                self._failures.append(
                    _Failure(status, json.dumps(payload).encode(), dict(headers or {}))
                )

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
        self.hold_stream = None
        self.hold_expired = False

    def last(self) -> Received:
        with self._lock:
            assert self.requests, "the mock received no request"
            return self.requests[-1]

    def _record(self, r: Received) -> _Failure | None:
        with self._lock:
            self.requests.append(r)
            return self._failures.pop(0) if self._failures else None


class _Handler(BaseHTTPRequestHandler):
    owner: MockOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, chunked streams

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        received = Received(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=raw,
        )
        failure = self.owner._record(received)
        if failure is not None:
            self._send_full(failure.status, failure.body, failure.headers)
            return
        path = self.path.split("?", 1)[0]
        content_type = self.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            self._upload(path, multipart_parts(content_type, raw))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_error(400, "invalid JSON body")
            return
        if path.endswith("/chat/completions"):
            self._chat(body)
        elif path.endswith("/embeddings"):
            self._embeddings(body)
        elif path.endswith("/responses"):
            self._responses(body)
        elif path.endswith("/responses/compact"):
            self._compact(body)
        elif path.endswith("/images/generations"):
            self._images(body, input_images=0)
        elif path.endswith("/audio/speech"):
            self._speech(body)
        elif path.endswith("/moderations"):
            self._moderations(body)
        elif path.endswith("/rerank"):
            self._rerank(body)
        else:
            self._send_error(404, f"unknown path {path}")

    def do_GET(self) -> None:  # noqa: N802
        self.owner._record(
            Received("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
        )
        self._send_error(404, "the mock serves POST only")

    # -- framing -----------------------------------------------------------

    def _send_full(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, value: Any) -> None:
        self._send_full(200, json.dumps(value).encode())

    def _send_error(self, status: int, message: str) -> None:
        payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        self._send_full(status, json.dumps(payload).encode())

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, value: Any, name: str | None = None) -> None:
        text = f"event: {name}\n" if name else ""
        text += f"data: {json.dumps(value)}\n\n"
        self._chunk(text.encode())

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hold(self) -> None:
        hold = self.owner.hold_stream
        if hold is not None and not hold.wait(timeout=HOLD_TIMEOUT):
            self.owner.hold_expired = True

    def _model(self, body: dict) -> str:
        return self.owner.model_label or body.get("model", "")

    # -- endpoints ---------------------------------------------------------

    def _chat(self, body: dict) -> None:
        problem = chat_problem(body)
        if problem:
            self._send_error(400, problem)
            return
        if self.owner.tools == "directed":
            turn = chat_turn(body)
            text, call = turn.text, turn.call
        else:
            call = tool_turn(body)
            text = tool_result_text(body) or reply_text(body)
            if call:
                text = ""
        pieces = words(text) if text else []
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(pieces),
            "total_tokens": PROMPT_TOKENS + len(pieces),
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        base = {
            "id": "chatcmpl-mock1",
            "created": int(time.time()),
            "model": self._model(body),
            "system_fingerprint": "fp_mock",
            "service_tier": "default",
        }
        if not body.get("stream"):
            self._send_json(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": None if call else text,
                                "refusal": None,
                                "annotations": [],
                                **({"tool_calls": [{
                                    "id": TOOL_CALL_ID,
                                    "type": "function",
                                    "function": {"name": call[0], "arguments": call[1]},
                                }]} if call else {}),
                            },
                            "logprobs": None,
                            "finish_reason": "tool_calls" if call else "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
            return
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunk = {**base, "object": "chat.completion.chunk"}
        extra = {"usage": None} if with_usage else {}

        def choice(delta: dict, finish: str | None) -> dict:
            return {
                **chunk,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **extra,
            }

        self._start_stream()
        self._event(choice({"role": "assistant", "content": "", "refusal": None}, None))
        for i, piece in enumerate(pieces):
            if i == len(pieces) - 1:
                self._hold()
            self._event(choice({"content": piece}, None))
        if call:
            # The name first, the arguments in two pieces, as OpenAI streams them.
            first = {"index": 0, "id": TOOL_CALL_ID, "type": "function",
                     "function": {"name": call[0], "arguments": ""}}
            self._event(choice({"tool_calls": [first]}, None))
            half = len(call[1]) // 2
            for part in (call[1][:half], call[1][half:]):
                self._event(choice({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, None))
        self._event(choice({}, "tool_calls" if call else "stop"))
        if with_usage:
            self._event({**chunk, "choices": [], "usage": usage})
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _upload(self, path: str, parts: list[tuple[str, str | None, bytes]]) -> None:
        fields = {name: content.decode() for name, filename, content in parts if filename is None}
        files = [content for name, filename, content in parts if filename is not None]
        if "model" not in fields:
            self._send_error(400, "you must provide a model parameter")
        elif path.endswith("/images/edits"):
            self._images(fields, input_images=len(files))
        elif path.endswith(("/audio/transcriptions", "/audio/translations")):
            self._transcription(fields, files[0])
        else:
            self._send_error(404, f"unknown path {path}")

    def _images(self, body: dict, input_images: int) -> None:
        n = int(body.get("n", 1))
        model = self._model(body)
        if body.get("response_format") == "url":
            item = {"url": f"{self.owner.base_url}/files/image.png"}
        else:
            item = {"b64_json": base64.b64encode(PNG).decode()}
        answer: dict[str, Any] = {"created": 1_700_000_000, "data": [item] * n}
        if not model.startswith("dall-e"):
            image_in = IMAGE_INPUT_TOKENS * input_images
            out = IMAGE_OUTPUT_TOKENS * n
            answer["usage"] = {
                "input_tokens": IMAGE_TEXT_TOKENS + image_in,
                "input_tokens_details": {"text_tokens": IMAGE_TEXT_TOKENS, "image_tokens": image_in},
                "output_tokens": out,
                "total_tokens": IMAGE_TEXT_TOKENS + image_in + out,
            }
        self._send_json(answer)

    def _transcription(self, fields: dict, audio: bytes) -> None:
        seconds = wav_seconds(audio)
        fmt = fields.get("response_format", "json")
        if fmt == "text":
            self._send_full(200, (TRANSCRIPT + "\n").encode(), {"content-type": "text/plain; charset=utf-8"})
        elif fmt == "verbose_json":
            self._send_json({"task": "transcribe", "language": "english", "duration": seconds,
                             "text": TRANSCRIPT, "segments": []})
        else:
            whole = int(-(-seconds // 1))
            self._send_json({"text": TRANSCRIPT, "usage": {"type": "duration", "seconds": whole}})

    def _speech(self, body: dict) -> None:
        if not isinstance(body.get("input"), str):
            self._send_error(400, "input: expected a string")
            return
        self.send_response(200)
        self.send_header("content-type", "audio/mpeg")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        left = self.owner.speech_bytes
        block = bytes(range(256)) * 256  # 64 KiB
        while left > 0:
            piece = block[: min(left, len(block))]
            self._chunk(piece)
            left -= len(piece)
        self._end_stream()

    def _moderations(self, body: dict) -> None:
        inputs = body.get("input", "")
        count = len(inputs) if isinstance(inputs, list) else 1
        categories = ["harassment", "hate", "self-harm", "sexual", "violence"]
        result = {
            "flagged": False,
            "categories": {c: False for c in categories},
            "category_scores": {c: 0.0001 for c in categories},
            "category_applied_input_types": {c: ["text"] for c in categories},
        }
        self._send_json({"id": "modr-1", "model": self._model(body), "results": [result] * count})

    def _rerank(self, body: dict) -> None:
        docs = body.get("documents", [])
        results = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(docs))]
        self._send_json({"id": "rerank-1", "model": self._model(body), "results": results,
                         "usage": {"total_tokens": RERANK_TOKENS}})

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input", [])
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, _ in enumerate(inputs):
            vector = embedding_for(i)
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                encoded: Any = base64.b64encode(packed).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = PROMPT_TOKENS * len(inputs)
        self._send_json(
            {
                "object": "list",
                "data": data,
                "model": self._model(body),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _compact(self, body: dict) -> None:
        """POST /v1/responses/compact: the user messages, then one opaque
        compaction item, and the usage of the compaction pass."""
        if not isinstance(body.get("input"), (str, list)):
            self._send_error(400, "input: expected a string or a list of items")
            return
        users = [i for i in body["input"] if isinstance(i, dict) and i.get("role") == "user"] \
            if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        self._send_json({
            "id": "resp_compact1",
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [{"type": "message", "id": f"msg_c{i}", "status": "completed", **u}
                       for i, u in enumerate(users)]
            + [{"type": "compaction", "id": "cmp_1", "encrypted_content": "b3BhcXVl"}],
            "usage": {
                "input_tokens": PROMPT_TOKENS,
                "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
                "output_tokens": 7,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": PROMPT_TOKENS + 7,
            },
        })

    def _responses(self, body: dict) -> None:
        turn = responses_turn(body) if self.owner.tools == "directed" else AgentTurn(reply_text(body))
        text = turn.text
        pieces = words(text) if text else []
        usage = {
            "input_tokens": PROMPT_TOKENS,
            "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
            "output_tokens": len(pieces),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": PROMPT_TOKENS + len(pieces),
        }
        message = {
            "id": "msg_mock1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }

        def response(status: str, output: list, with_usage: bool) -> dict:
            return {
                "id": "resp_mock1",
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": self._model(body),
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None},
                "store": True,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": "auto",
                "tools": [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage if with_usage else None,
                "user": None,
                "metadata": {},
            }

        if turn.call:
            self._responses_call(body, turn.call, response)
            return
        if not body.get("stream"):
            self._send_json(response("completed", [message], True))
            return

        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> None:
            self._event({"type": kind, "sequence_number": next(seq), **fields}, kind)

        ids = {"item_id": "msg_mock1", "output_index": 0, "content_index": 0}
        self._start_stream()
        event("response.created", response=response("in_progress", [], False))
        event("response.in_progress", response=response("in_progress", [], False))
        event(
            "response.output_item.added",
            output_index=0,
            item={**message, "status": "in_progress", "content": []},
        )
        event(
            "response.content_part.added",
            **ids,
            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
        )
        for i, piece in enumerate(pieces):
            if i == len(pieces) - 1:
                self._hold()
            event("response.output_text.delta", **ids, delta=piece, logprobs=[])
        event("response.output_text.done", **ids, text=text, logprobs=[])
        event("response.content_part.done", **ids, part=message["content"][0])
        event("response.output_item.done", output_index=0, item=message)
        event("response.completed", response=response("completed", [message], True))
        self._end_stream()

    def _responses_call(self, body: dict, call: tuple[str, str], response) -> None:
        """A ``function_call`` item, streamed with its arguments in two pieces."""
        name, arguments = call
        item = {"id": "fc_mock1", "type": "function_call", "status": "completed",
                "arguments": arguments, "call_id": TOOL_CALL_ID, "name": name}
        if not body.get("stream"):
            self._send_json(response("completed", [item], True))
            return
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> None:
            self._event({"type": kind, "sequence_number": next(seq), **fields}, kind)

        self._start_stream()
        event("response.created", response=response("in_progress", [], False))
        event("response.output_item.added", output_index=0,
              item={**item, "status": "in_progress", "arguments": ""})
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            event("response.function_call_arguments.delta", item_id="fc_mock1",
                  output_index=0, delta=part)
        event("response.function_call_arguments.done", item_id="fc_mock1",
              output_index=0, arguments=arguments)
        event("response.output_item.done", output_index=0, item=item)
        event("response.completed", response=response("completed", [item], True))
        self._end_stream()
