"""Resident memory of tollgate while it relays media (not in CI).

    .venv/bin/python benches/media_memory.py [--upload-mib 20] [--speech-mib 50]

Starts tollgate (``TOLLGATE_BIN``, else ``target/debug/tollgate``; build
``cargo build --release`` and point ``TOLLGATE_BIN`` at
``target/release/tollgate`` for release figures) in front of the loopback
OpenAI mock of ``tests/python/mock_openai.py`` and measures tollgate's RSS
(``VmRSS`` of ``/proc/PID/status``, sampled every 2 ms by a thread, and
the kernel's high-water mark ``VmHWM``) over two requests:

1. a ``--upload-mib`` multipart upload to ``/v1/audio/transcriptions``
   (a WAV file): the request body is held whole, up to ``max_body_bytes``,
   by design (it is replayed on failover), so growth of about the upload
   is expected;
2. a ``--speech-mib`` answer of ``/v1/audio/speech``, sent by the mock in
   64 KiB chunks and read by the client as it comes: passed through chunk
   by chunk, so growth should stay far below the answer's size.

Each request is made after a warm-up of the same kind with a small body,
so that what is measured is the request's own memory, not first-use
allocations. Prints a Markdown table; see benches/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import struct
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))

from harness import Tollgate, sha256_hex  # noqa: E402
from mock_openai import MockOpenAI  # noqa: E402

KEY = "sk-bench-media-memory"
BOUNDARY = "tollgate-bench-boundary"
MIB = 1024 * 1024


def config(base_url: str) -> str:
    return f"""max_body_bytes = {64 * MIB}

[[groups]]
name = "g"
ratio = 1

[[models]]
name = "whisper-1"
per_second = 0.0001

[[models]]
name = "tts-1"
per_1k_chars = 0.015

[[channels]]
name = "openai"
type = "openai"
base_url = "{base_url}"
api_key = "sk-bench-upstream"
groups = ["g"]

[[keys]]
name = "bench"
key_sha256 = "{sha256_hex(KEY)}"
groups = ["g"]
"""


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Sampler:
    """The highest VmRSS seen while running."""

    def __init__(self, pid: int):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            time.sleep(0.002)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))


def wav(data_bytes: int) -> bytes:
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 16_000, 32_000, 2, 16
    ) + b"data" + struct.pack("<I", data_bytes)
    return header + bytes(data_bytes)


def post(port: int, path: str, content_type: str, body: bytes) -> int:
    """POSTs and reads the answer in 64 KiB pieces; returns its size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, body=body,
                 headers={"authorization": f"Bearer {KEY}", "content-type": content_type})
    resp = conn.getresponse()
    assert resp.status == 200, (resp.status, resp.read()[:500])
    size = 0
    while chunk := resp.read(64 * 1024):
        size += len(chunk)
    conn.close()
    return size


def upload(port: int, mib: float) -> int:
    audio = wav(int(mib * MIB))
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{BOUNDARY}--\r\n".encode()
    post(port, "/v1/audio/transcriptions", f"multipart/form-data; boundary={BOUNDARY}", body)
    return len(body)


def speech(port: int, mock: MockOpenAI, mib: float) -> int:
    mock.speech_bytes = int(mib * MIB)
    body = b'{"model":"tts-1","voice":"alloy","input":"Hello there."}'
    return post(port, "/v1/audio/speech", "application/json", body)


def measure(pid: int, run) -> tuple[int, int, int]:
    """(RSS before, peak RSS during, VmHWM after), KiB."""
    before = status_kib(pid, "VmRSS")
    with Sampler(pid) as s:
        run()
    return before, s.peak, status_kib(pid, "VmHWM")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--upload-mib", type=float, default=20)
    args.add_argument("--speech-mib", type=float, default=50)
    opts = args.parse_args()
    mock = MockOpenAI().start()
    tollgate = Tollgate.start(config(mock.base_url))
    pid = tollgate.process.pid
    try:
        upload(tollgate.port, 0.1)
        speech(tollgate.port, mock, 0.5)
        rows = []
        sizes = {}
        for name, size_mib, run in [
            ("speech answer", opts.speech_mib, lambda: sizes.update(speech=speech(tollgate.port, mock, opts.speech_mib))),
            ("multipart upload", opts.upload_mib, lambda: sizes.update(upload=upload(tollgate.port, opts.upload_mib))),
        ]:
            before, peak, hwm = measure(pid, run)
            rows.append((name, size_mib, before, peak, hwm))
    finally:
        tollgate.stop()
        mock.stop()
    binary = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")
    print(f"tollgate: {binary}; RSS in MiB (VmRSS sampled every 2 ms)\n")
    print("| request | body | RSS before | peak RSS | growth | VmHWM after |")
    print("|---|---|---|---|---|---|")
    for name, size_mib, before, peak, hwm in rows:
        print(f"| {name} | {size_mib:g} MiB | {before / 1024:.1f} | {peak / 1024:.1f} | "
              f"{(peak - before) / 1024:.1f} | {hwm / 1024:.1f} |")
    assert sizes["speech"] == int(opts.speech_mib * MIB)


if __name__ == "__main__":
    main()
