#!/usr/bin/env python3
"""Soak driver for tollgate (see scripts/soak.sh, which documents it).

Starts two OpenAI-format upstreams on loopback (a steady one and a flaky one
that injects faults), writes a config, starts tollgate, and runs a bounded
mixed load: non-stream and stream chat completions, client disconnects,
malformed requests, unknown models, with config reloads (file rename,
POST /admin/reload, SIGHUP) every RELOAD seconds. Samples tollgate's RSS
every 10 s. At the end it stops tollgate with SIGTERM and checks: no panic
in the log, RSS flat (last samples within 10% of the first ones after the
warm-up, half the run and at most 60 minutes),
the tokens tollgate metered from upstream usage equal the tokens the clients
expected for every answer they received whole, and (when the build has a
ledger) the ledger's soak-main totals equal the access log's. Standard
library only.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

STOP = threading.Event()


# ---------------------------------------------------------------- upstreams

def read_request(rfile):
    """One HTTP/1.1 request with a Content-Length body, or None at EOF."""
    line = rfile.readline()
    if not line:
        return None
    headers = {}
    while True:
        h = rfile.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = rfile.read(int(headers.get("content-length", "0")))
    return line.decode("latin-1"), headers, body


def usage_for(req):
    """The usage the mock reports: chosen by the client, so it can predict it."""
    prompt = int(req.get("user", "p=1").split("=")[1])
    return prompt, int(req.get("max_tokens", 1))


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_event(obj):
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class Upstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, flaky):
        self.flaky = flaky
        self.faults = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def count(self, what):
        with self.lock:
            self.faults[what] = self.faults.get(what, 0) + 1


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not STOP.is_set():
            got = read_request(self.rfile)
            if got is None:
                return
            _, _, body = got
            req = json.loads(body)
            fault = self.pick_fault(req.get("stream", False))
            self.server.count(fault)
            if not self.answer(req, fault):
                return

    def pick_fault(self, stream):
        if not self.server.flaky:
            return "ok"
        r = random.random()
        if r < 0.08:
            return "500"
        if r < 0.14:
            return "429"
        if r < 0.18:
            return "reset"
        if r < 0.19:
            return "stall_head"
        if stream and r < 0.24:
            return "cut_mid_stream"
        return "ok"

    def send(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def answer(self, req, fault):
        """Writes the answer; False when the connection must end."""
        if fault == "500":
            body = b'{"error":{"message":"upstream exploded","type":"server_error"}}'
            self.send(b"HTTP/1.1 500 X\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if fault == "429":
            body = b'{"error":{"message":"slow down","type":"rate_limit"}}'
            self.send(b"HTTP/1.1 429 X\r\nretry-after: 1\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
            return True
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        if fault == "stall_head":
            time.sleep(3)
            return False
        prompt, completion = usage_for(req)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}
        if not req.get("stream"):
            body = json.dumps({
                "id": "c", "object": "chat.completion", "created": 1, "model": req["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 20},
                             "finish_reason": "stop"}],
                "usage": usage}).encode()
            self.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n%s" % (len(body), body))
            return True
        self.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                  b"transfer-encoding: chunked\r\n\r\n")
        events = random.randint(5, 15)
        for i in range(events):
            if fault == "cut_mid_stream" and i == 2:
                return False
            time.sleep(random.uniform(0.002, 0.02))
            self.send(chunk(sse_event({
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": req["model"],
                "choices": [{"index": 0, "delta": {"content": "tok%d " % i}, "finish_reason": None}]})))
        if req.get("stream_options", {}).get("include_usage"):
            self.send(chunk(sse_event({"id": "c", "object": "chat.completion.chunk", "created": 1,
                                       "model": req["model"], "choices": [], "usage": usage})))
        self.send(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return True


# ------------------------------------------------------------------ config

def config(port, admin, data_dir, steady, flaky, generation_note, store):
    return f"""
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data_dir}"
upstream_connect_timeout_ms = 1000
upstream_header_timeout_seconds = 2
upstream_idle_timeout_seconds = 2
shutdown_grace_seconds = 2

[routing]
cooldown_seconds = 1
max_cooldown_seconds = 4
max_attempts = 3

[[groups]]
name = "default"
ratio = 1.0
description = "soak {generation_note}"
all_channels = true

[[models]]
name = "soak-main"
input = 1
output = 2

[[models]]
name = "soak-abort"
input = 1
output = 2

[[channels]]
name = "flaky"
type = "openai"
base_url = "http://127.0.0.1:{flaky}"
api_key = "sk-soak-flaky"
models = ["soak-main", "soak-abort"]
priority = 10

[[channels]]
name = "steady"
type = "openai"
base_url = "http://127.0.0.1:{steady}"
api_key = "sk-soak-steady"
models = ["soak-main", "soak-abort"]

[[keys]]
name = "soak"
key = "sk-soak-client"

[store]
{store}
"""


# ------------------------------------------------------------------ clients

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.expected_input = 0
        self.expected_output = 0
        self.complete = 0

    def add(self, what, usage=None):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if usage:
                self.complete += 1
                self.expected_input += usage[0]
                self.expected_output += usage[1]


def worker(port, tally, pause):
    conn = None
    while not STOP.is_set():
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        kind = random.choices(["plain", "stream", "stream_usage", "abort", "malformed", "unknown"],
                              [45, 25, 15, 5, 5, 5])[0]
        prompt, completion = random.randint(1, 5000), random.randint(1, 800)
        req = {"model": "soak-abort" if kind == "abort" else "soak-main",
               "messages": [{"role": "user", "content": "soak"}],
               "user": f"p={prompt}", "max_tokens": completion}
        if kind in ("stream", "stream_usage", "abort"):
            req["stream"] = True
        if kind == "stream_usage":
            req["stream_options"] = {"include_usage": True}
        if kind == "unknown":
            req["model"] = "no-such-model"
        body = json.dumps(req)
        if kind == "malformed":
            body = body[:-5]
        try:
            conn.request("POST", "/v1/chat/completions", body=body,
                         headers={"authorization": "Bearer sk-soak-client",
                                  "content-type": "application/json"})
            resp = conn.getresponse()
            if kind == "abort":
                resp.read(1)
                conn.close()
                conn = None
                tally.add("abort")
                continue
            data = resp.read()
            status = resp.status
        except Exception as e:  # a broken stream ends the HTTP message badly
            tally.add("broken:" + type(e).__name__)
            if conn is not None:
                conn.close()
            conn = None
            continue
        if kind in ("malformed", "unknown"):
            tally.add(f"{kind}:{status}")
        elif status != 200:
            tally.add(f"error:{status}")
        elif req.get("stream"):
            text = data.decode()
            whole = text.endswith("data: [DONE]\n\n") and "upstream_stream_broken" not in text
            tally.add("stream_ok" if whole else "stream_cut", (prompt, completion) if whole else None)
        else:
            got = json.loads(data)["usage"]
            assert (got["prompt_tokens"], got["completion_tokens"]) == (prompt, completion)
            tally.add("plain_ok", (prompt, completion))
        if resp.getheader("connection", "").lower() == "close":
            conn.close()
            conn = None
        time.sleep(pause)


# ------------------------------------------------------------------ checks

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def metered(log_path):
    """Sums of the access log: (input, output, records) of status-200
    soak-main answers billed from reported usage, and estimated ones."""
    reported = [0, 0, 0]
    estimated = 0
    every = [0, 0, 0]
    with open(log_path, errors="replace") as f:
        for line in f:
            if " request " not in line or "status=200" not in line or 'model="soak-main"' not in line \
                    and "model=soak-main" not in line:
                continue
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            every[0] += int(fields["input"])
            every[1] += int(fields["output"])
            every[2] += 1
            if fields.get("estimated") == "true":
                estimated += 1
                continue
            reported[0] += int(fields["input"])
            reported[1] += int(fields["output"])
            reported[2] += 1
    return reported, estimated, every


def ledger_totals(admin):
    """(input, output, requests) of soak-main in the ledger, or None when
    this build has no /admin/usage."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    conn.request("GET", "/admin/usage?model=soak-main")
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        return None
    total = json.loads(body)["total"]
    return total["input"], total["output"], total["requests"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seconds", type=int, default=7200)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--pause", type=float, default=0.03)
    ap.add_argument("--reload-every", type=int, default=20)
    ap.add_argument("--store", default="", help="lines of the [store] section")
    args = ap.parse_args()
    if args.seconds > 7200:
        sys.exit("soak: --seconds is capped at 7200")

    steady, flaky = Upstream(False), Upstream(True)
    for s in (steady, flaky):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    port, admin = ports
    cfg_path = os.path.join(args.workdir, "tollgate.toml")
    data_dir = os.path.join(args.workdir, "data")
    log_path = os.path.join(args.workdir, "tollgate.log")

    def write_config(note):
        aside = cfg_path + ".tmp"
        with open(aside, "w") as f:
            f.write(config(port, admin, data_dir, steady.server_address[1],
                           flaky.server_address[1], note, args.store))
        os.rename(aside, cfg_path)

    write_config("0")
    log = open(log_path, "w")
    tg = subprocess.Popen([args.binary, "run", "-c", cfg_path], stdout=subprocess.DEVNULL,
                          stderr=log, env={**os.environ, "RUST_LOG": "info"})
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        tg.kill()
        sys.exit("soak: tollgate did not start; see " + log_path)

    tally = Tally()
    workers = [threading.Thread(target=worker, args=(port, tally, args.pause), daemon=True)
               for _ in range(args.workers)]
    for w in workers:
        w.start()
    started = time.time()
    samples = []
    reloads = 0
    next_sample, next_reload = started, started + args.reload_every
    try:
        while time.time() - started < args.seconds:
            now = time.time()
            if now >= next_sample:
                samples.append((round(now - started), rss_kib(tg.pid)))
                print(f"soak: t={samples[-1][0]:5d}s rss={samples[-1][1]} KiB "
                      f"answers={sum(tally.counts.values())}", flush=True)
                next_sample += 10
            if now >= next_reload:
                reloads += 1
                way = reloads % 3
                if way == 0:
                    write_config(str(reloads))
                elif way == 1:
                    http.client.HTTPConnection("127.0.0.1", admin, timeout=10).request(
                        "POST", "/admin/reload")
                else:
                    tg.send_signal(signal.SIGHUP)
                next_reload += args.reload_every
            if tg.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        STOP.set()
        for w in workers:
            w.join(timeout=35)
        crashed = tg.poll()
        ledger = None
        if crashed is None:
            time.sleep(2)  # in-flight answers settle and are billed
            ledger = ledger_totals(admin)
        tg.send_signal(signal.SIGTERM)
        try:
            code = tg.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tg.kill()
            code = "killed after 30 s"
        log.close()

    failures = []
    if crashed is not None:
        failures.append(f"tollgate exited during the soak (code {crashed})")
    if code != 0:
        failures.append(f"tollgate did not stop cleanly on SIGTERM: {code}")
    with open(log_path, errors="replace") as f:
        text = f.read()
    panics = text.count("panicked")
    if panics:
        failures.append(f"{panics} panic(s) in the log")
    (m_in, m_out, m_n), estimated, every = metered(log_path)
    if ledger is not None and tuple(ledger) != tuple(every):
        failures.append(f"ledger input/output/requests {ledger} != access log {tuple(every)}")
    if (m_in, m_out, m_n) != (tally.expected_input, tally.expected_output, tally.complete):
        failures.append(f"metered input/output/answers {m_in}/{m_out}/{m_n} != expected "
                        f"{tally.expected_input}/{tally.expected_output}/{tally.complete}")
    # Warm-up: the store's resident memory fills over the first ~250,000
    # logged requests (~55 min at the default load) and then stays nearly
    # flat (measured: examples/ledger_memory.rs; README, [store]).
    warm_up = min(3600, args.seconds // 2)
    warm = [r for t, r in samples if t >= warm_up]
    if len(warm) >= 6:
        base = sum(warm[:3]) / 3
        last = sum(warm[-3:]) / 3
        growth = (last - base) / base * 100
        if growth > 10:
            failures.append(f"RSS grew {growth:.1f}% after warm-up ({base:.0f} -> {last:.0f} KiB)")
    else:
        growth = float("nan")

    print("soak: duration %ds, answers by kind: %s" % (args.seconds, json.dumps(
        dict(sorted(tally.counts.items())))))
    print("soak: flaky upstream faults: %s" % json.dumps(dict(sorted(flaky.faults.items()))))
    print("soak: steady upstream answers: %s" % json.dumps(steady.faults))
    print(f"soak: reloads {reloads}; RSS samples (KiB) min {min(r for _, r in samples)} "
          f"max {max(r for _, r in samples)} first {samples[0][1]} last {samples[-1][1]}; "
          f"at warm-up end ({warm_up}s) {warm[0] if warm else 'n/a'}; "
          f"growth after warm-up {growth:.1f}%")
    print(f"soak: metered from usage {m_n} answers, input {m_in}, output {m_out}; "
          f"client expected {tally.complete}, {tally.expected_input}, {tally.expected_output}; "
          f"{estimated} estimated (broken upstream streams)")
    print(f"soak: ledger (soak-main) input/output/requests: "
          f"{ledger if ledger is not None else 'no /admin/usage in this build'}; "
          f"access log incl. estimated: {tuple(every)}")
    print(f"soak: panics {panics}; exit on SIGTERM {code}")
    if failures:
        print("soak: FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("soak: OK")


if __name__ == "__main__":
    main()
