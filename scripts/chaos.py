#!/usr/bin/env python3
"""The clients of scripts/chaos.sh and scripts/soak.sh (not run on its own).

    chaos.py reader CHAT-PORT READY STOP EXPECT OUT
        the chat member that checks: joins, proves it is in the room (a line
        of its own through a second connection), writes READY, then reads as
        fast as it can until STOP exists; then it reads on until every
        well-behaved sender listed in EXPECT (the `good` process's OUT) has
        been seen whole, or 15 s pass. Every line must start with `* ` or
        `[127.0.0.1:`; a well-behaved sender's lines must come in order, each
        exactly once, intact. It must never be dropped.
    chaos.py good|hostile PORTS-JSON ROOT SECS CONNS OUT [PROGRESS]
        CONNS concurrent clients (asyncio, one process) doing random
        well-behaved (good) or hostile behaviours against every service for
        SECS seconds; counts per behaviour go to OUT as JSON (and to PROGRESS,
        if given, every 2 s). Well-behaved clients check every byte; what
        they find wrong is a violation. The server's --request-timeout and
        --admin-idle-timeout come from $CHAOS_REQUEST_TIMEOUT and
        $CHAOS_ADMIN_IDLE_TIMEOUT (default: the server's defaults): slow
        loris and idle admin clients check that they are ended then, never
        before.
    chaos.py report GOOD HOSTILE READER
        the table of counts, the violations; exit 1 if there are any.
    chaos.py sample SAMPLES ELAPSED PID ADMIN-PORT PROGRESS...
    chaos.py verdict SAMPLES
        soak.sh's samples (one JSON line) and its verdict.

Every loop is bounded in count and time; every address is 127.0.0.1. The
helpers for counting chat lines and asking admin come from
measure-hostile.py.
"""

import asyncio
import collections
import errno
import hashlib
import importlib.util
import json
import os
import random
import signal
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
_spec = importlib.util.spec_from_file_location(
    "measure_hostile", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "measure-hostile.py"))
mh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mh)
HOST, now, why, write_json, query, Lines = mh.HOST, mh.now, mh.why, mh.write_json, mh.query, mh.Lines

ACK_REPLY = "收到请求\n".encode()
MAX_OPS = 2_000_000  # per process, whatever SECS says
GOOD_TIMEOUT = 20.0  # seconds a well-behaved exchange may take
# The server's deadlines, as chaos.sh starts it.
REQUEST_TIMEOUT = float(os.environ.get("CHAOS_REQUEST_TIMEOUT", "10"))
ADMIN_IDLE_TIMEOUT = float(os.environ.get("CHAOS_ADMIN_IDLE_TIMEOUT", "60"))
# Seconds a deadline may be late under chaos's load before it counts as
# never kept (inside GOOD_TIMEOUT with the deadlines chaos.sh sets).
DEADLINE_SLACK = 10.0
# Idle admin clients at once: with the hostile (6) and well-behaved (4)
# admin clients, two slots of the reserve of 16 stay free for the
# script's own `stats`.
IDLE_ADMINS = 4
# Prometheus's own Accept: it asks for OpenMetrics, whose end is `# EOF`
# (a scraper that does not ask gets the text format 0.0.4).
SCRAPE = (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
          b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n")


def payload(sid, seq):
    """The text of a well-behaved chat sender's line: checkable by anyone."""
    h = hashlib.sha1(f"{sid}/{seq}".encode()).hexdigest()
    return h * (1 + (seq * 7 + sid) % 5)


# --------------------------------------------------------------------------
# The checking chat member: plain selectors, its own process, so it reads as
# fast as a client can.


def reader(port, ready, stop, expect, out):
    import selectors
    port = int(port)
    sel = selectors.DefaultSelector()
    s = socket.create_connection((HOST, port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setblocking(False)
    me = Lines(s)
    sel.register(s, selectors.EVENT_READ, me)
    state = {"next": {}, "addr": {}, "bad": [], "garbled": 0, "good_lines": 0,
             "sync": False}
    nonce = f"sync-{os.getpid()}-{random.random()}".encode()

    def bad(text):
        if len(state["bad"]) < 20:
            state["bad"].append(text)

    def on_line(line):
        if line.endswith(b"] " + nonce):
            state["sync"] = True
            return
        if line.startswith(b"* "):
            return
        if not line.startswith(b"[127.0.0.1:"):
            state["garbled"] += 1
            bad(f"chat line with neither '* ' nor '[PEER] ' in front: {line[:80]!r}")
            return
        peer, _, text = line.partition(b"] ")
        if not text.startswith(b"good "):
            return
        parts = text.split(b" ")
        try:
            sid, seq, body = int(parts[1]), int(parts[2]), parts[3].decode()
        except (IndexError, ValueError, UnicodeDecodeError):
            bad(f"mangled well-behaved line: {line[:100]!r}")
            return
        state["good_lines"] += 1
        want = state["next"].get(sid, 0)
        if seq != want:
            bad(f"sender {sid} ({peer[1:].decode()}): line {seq} came where line {want} was due")
        elif body != payload(sid, seq) or len(parts) != 4:
            bad(f"sender {sid}: line {seq} is not what was sent: {line[:100]!r}")
        state["next"][sid] = max(want, seq + 1)
        state["addr"][sid] = peer[1:].decode()

    me.on_line = on_line
    # Prove membership: a line through a second connection must come back.
    t0 = now()
    sync = socket.create_connection((HOST, port), timeout=5)
    while not state["sync"] and now() - t0 < 15:
        try:
            sync.sendall(nonce + b"\n")
        except OSError:
            break
        mh.pump(sel, 0.1)
    sync.close()
    open(ready, "w").close()
    if not state["sync"]:
        bad("the reader never saw its own sync line: not in the room after 15 s")
    # Read until told to stop (bounded: the script always stops it).
    end = now() + 3600 * 24
    while now() < end and not os.path.exists(stop) and sel.get_map():
        mh.pump(sel, 0.2)
    # Then until every finished well-behaved sender has been seen whole.
    expected = {}
    try:
        with open(expect) as f:
            for snd in json.load(f).get("senders", []):
                expected[snd["sid"]] = snd["sent"]
                state["addr"].setdefault(snd["sid"], snd["addr"])
    except (OSError, ValueError):
        bad(f"no list of well-behaved chat senders in {expect}")
    t1 = now()
    while now() - t1 < 15 and sel.get_map() and any(
            state["next"].get(sid, 0) < n for sid, n in expected.items()):
        mh.pump(sel, 0.1)
    missing = {sid: (state["next"].get(sid, 0), n) for sid, n in expected.items()
               if state["next"].get(sid, 0) != n}
    for sid, (got, n) in list(missing.items())[:10]:
        bad(f"sender {sid} ({state['addr'].get(sid)}) sent {n} lines; the reader got {got}")
    if me.too_slow:
        bad("the reader was dropped as too slow ('* disconnected: too slow')")
    elif me.eof or me.error:
        bad(f"the reader's connection ended: {me.error or 'closed by the server'}")
    s.close()
    write_json(out, {"lines": me.lines, "bytes": me.bytes, "good_lines": state["good_lines"],
                     "senders_expected": len(expected), "senders_short": len(missing),
                     "garbled": state["garbled"], "violations": state["bad"]})


# --------------------------------------------------------------------------
# The load: asyncio on non-blocking sockets.


class Refused(Exception):
    """The server said `ERR server full` (or the like) instead of serving."""


class Violation(Exception):
    """A well-behaved check found the server wrong."""


class Unexpected(Exception):
    """A hostile client got an answer other than the documented one, where
    that does no harm to anybody else (counted as an error, not a violation)."""


class Load:
    def __init__(self, ports, root, secs, conns, out, progress, good):
        self.ports, self.root, self.secs, self.conns = ports, root, float(secs), int(conns)
        self.out, self.progress, self.good = out, progress, good
        self.counts = collections.defaultdict(collections.Counter)
        self.error_kinds = collections.Counter()
        self.violations = []
        self.senders = []
        self.ops = 0
        self.sid = 0
        self.admin_sem = None
        self.files = {}
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        self.files[os.path.relpath(p, root)] = f.read()
        self.listing = b"".join(
            n.encode() + b"\n" for n in sorted(self.files, key=lambda n: n.encode().split(b"/")))

    # ---- socket helpers

    async def connect(self, service):
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, (HOST, self.ports[service])), 10)
        except BaseException:
            s.close()
            raise
        return s

    @staticmethod
    def reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        s.close()

    @staticmethod
    def shut(s):
        """Half-closes; a server that has already closed (a refusal) is
        found by the read that follows."""
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    @staticmethod
    async def recv(s, n=1 << 16):
        return await asyncio.get_running_loop().sock_recv(s, n)

    @staticmethod
    async def send(s, data):
        await asyncio.get_running_loop().sock_sendall(s, data)

    async def read_all(self, s, limit=1 << 26, prefix=b""):
        """Reads until EOF (or `limit` bytes)."""
        buf = bytearray(prefix)
        while len(buf) < limit:
            chunk = await self.recv(s, 1 << 18)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def send_pieces(self, s, data, first=None):
        """Sends data in random pieces (the first `first` bytes at once)."""
        i = 0
        if first:
            await self.send(s, data[:first])
            i = first
        while i < len(data):
            n = random.choice((1, 7, 100, 1500, 65536, 200_000))
            await self.send(s, data[i:i + n])
            i += n
            if random.random() < 0.1:
                await asyncio.sleep(random.random() * 0.01)

    @staticmethod
    def refusal(data):
        if data.startswith(b"ERR server full") or data.startswith(b"ERR too many"):
            raise Refused(data.split(b"\n")[0].decode(errors="replace"))
        if data.startswith(b"HTTP/1.0 503 "):
            raise Refused("HTTP 503 (the admin reserve is full)")

    def violation(self, name, text):
        raise Violation(f"{name}: {text}")

    # ---- well-behaved checks

    async def good_echo(self):
        data = os.urandom(random.choice((1, 64, 4096, 65536, 300_000, 1_000_000)))
        s = await self.connect("echo")
        with s:
            async def sender():
                await self.send_pieces(s, data)
                self.shut(s)
            task = asyncio.ensure_future(sender())
            try:
                got = await self.read_all(s, len(data) + 100)
            except BaseException:
                task.cancel()
                raise
            await task
        self.refusal(got)
        if got != data:
            self.violation("echo", f"sent {len(data)} bytes, got {len(got)} back, first "
                                   f"difference at byte {first_diff(data, got)}")

    async def good_ack(self):
        k = random.randint(1, 300)
        msgs = [f"m{random.randint(0, 10**9)}{'x' * random.randint(0, 200)}" for _ in range(k)]
        text = b"".join(m.encode() + random.choice((b"\n", b"\r\n")) for m in msgs) + b"exit\n"
        s = await self.connect("ack")
        with s:
            first = text.index(b"\n") + 1  # a first burst without a newline is a message
            task = asyncio.ensure_future(self.send_pieces(s, text, first))
            got = await self.read_all(s, len(ACK_REPLY) * (k + 5))
            await task
        self.refusal(got)
        if got != ACK_REPLY * k:
            self.violation("ack", f"{k} messages and exit: got {got.count(ACK_REPLY)} replies "
                                  f"in {len(got)} bytes, want {k} in {len(ACK_REPLY) * k}")

    async def good_get(self):
        name = random.choice(list(self.files) + ["missing.txt"])
        bare = random.random() < 0.3
        s = await self.connect("files")
        with s:
            await self.send(s, name.encode() if bare else f"GET {name}\n".encode())
            self.shut(s)
            got = await self.read_all(s)
        self.refusal(got)
        want = self.files.get(name)
        if bare:
            if got != (want or b""):
                self.violation("files", f"bare {name}: {len(got)} bytes, want {len(want or b'')}"
                                        f", first difference at {first_diff(want or b'', got)}")
        elif want is None:
            if got != b"ERR not found\n":
                self.violation("files", f"GET {name}: {got[:60]!r}, want ERR not found")
        elif got != b"OK %d\n" % len(want) + want:
            head = got.split(b"\n")[0][:60]
            self.violation("files", f"GET {name}: got {len(got)} bytes ({head!r}), want "
                                    f"OK {len(want)} and the bytes")

    async def good_list(self):
        s = await self.connect("files")
        with s:
            await self.send(s, b"LIST\n")
            got = await self.read_all(s)
        self.refusal(got)
        if got != self.listing:
            self.violation("files", f"LIST: {got[:200]!r}, want {self.listing!r}")

    async def good_admin(self):
        cmd = random.choice((b"stats", b"stats json", b"clients json", b"help"))
        async with self.admin_sem:
            s = await self.connect("admin")
            with s:
                await self.send(s, cmd + b"\n")
                self.shut(s)
                got = await self.read_all(s)
        self.refusal(got)
        if cmd.endswith(b"json"):
            try:
                json.loads(got)
            except ValueError:
                self.violation("admin", f"{cmd.decode()}: not JSON: {got[:80]!r}")
        elif not got or got.startswith(b"ERR"):
            self.violation("admin", f"{cmd.decode()}: {got[:80]!r}")

    async def good_scrape(self):
        """A Prometheus scrape: one HTTP answer with the whole exposition,
        then the server closes."""
        async with self.admin_sem:
            s = await self.connect("admin")
            with s:
                await self.send_pieces(s, SCRAPE)
                got = await self.read_all(s)
        self.refusal(got)
        head, _, body = got.partition(b"\r\n\r\n")
        length = [l for l in head.split(b"\r\n") if l.startswith(b"Content-Length: ")]
        if (not head.startswith(b"HTTP/1.0 200 OK\r\n") or not body.endswith(b"# EOF\n")
                or length != [b"Content-Length: %d" % len(body)]):
            self.violation("scrape", f"GET /metrics: {got[:80]!r} ... {got[-20:]!r}")

    async def good_chat(self):
        self.sid += 1
        sid = self.sid
        n = random.randint(1, 100)
        s = await self.connect("chat")
        rec = {"sid": sid, "addr": "%s:%d" % s.getsockname(), "sent": 0}
        head = bytearray()
        with s:
            async def drain():
                while True:
                    chunk = await self.recv(s, 1 << 18)
                    if not chunk:
                        return
                    if len(head) < 64:
                        head.extend(chunk[:64])
                    if b"* disconnected: too slow" in chunk:
                        self.violation("chat", f"sender {sid} that reads was dropped as too slow")
            reading = asyncio.ensure_future(drain())
            try:
                for seq in range(n):
                    await self.send(s, b"good %d %d %s\n" % (sid, seq, payload(sid, seq).encode()))
                    rec["sent"] = seq + 1
                    if random.random() < 0.3:
                        await asyncio.sleep(random.random() * 0.05)
                self.shut(s)
                await reading  # the server closes once it has everything
            finally:
                reading.cancel()
                if not head.startswith(b"ERR"):
                    self.senders.append(rec)
        self.refusal(bytes(head))

    # ---- hostile behaviours: each returns normally if the server reacted
    # as it should; Violation if it did something it must never do.

    SERVICES = ("echo", "ack", "files", "chat", "admin")

    async def hostile_conn(self, service):
        if service == "admin":
            async with self.admin_sem:
                return await self.connect(service)
        return await self.connect(service)

    async def h_clean_close(self):
        s = await self.connect(random.choice(self.SERVICES[:4]))
        await asyncio.sleep(random.random() * 0.2)
        s.close()

    async def h_reset(self):
        s = await self.connect(random.choice(self.SERVICES[:4]))
        if random.random() < 0.5:
            await self.send(s, os.urandom(random.randint(1, 5000)))
        await asyncio.sleep(random.random() * 0.2)
        self.reset(s)

    async def h_half_close(self):
        svc = random.choice(self.SERVICES)
        s = await self.hostile_conn(svc)
        with s:
            self.shut(s)
            await asyncio.wait_for(self.read_all(s, 1 << 20), 10)

    async def h_stall(self):
        """Asks for a lot, then never reads for a while."""
        svc = random.choice(("echo", "files", "chat", "ack"))
        s = await self.connect(svc)
        try:
            if svc == "files":
                await self.send(s, b"GET big.bin\n")
            elif svc == "echo":
                await self.push(s, 4 << 20, 2.0)
            elif svc == "ack":
                await self.push(s, 1 << 20, 2.0, b"x\n" * 4096)
            await asyncio.sleep(random.uniform(1, 4))
        finally:
            self.reset(s) if random.random() < 0.5 else s.close()

    async def push(self, s, total, secs, chunk=None):
        """Sends without reading, up to `total` bytes or until stuck `secs`."""
        chunk = chunk or os.urandom(65536)
        sent, end = 0, now() + secs
        while sent < total and now() < end:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                await asyncio.sleep(0.05)
        return sent

    async def h_slowloris(self):
        svc = random.choice(self.SERVICES)
        req = {"echo": b"slow bytes\n", "ack": b"slow ack line\n", "files": b"GET small.txt\n",
               "chat": b"slow chat line\n", "admin": b"stats\n"}[svc]
        t0 = now()
        s = await self.hostile_conn(svc)
        with s:
            for b in req:
                await self.send(s, bytes([b]))
                await asyncio.sleep(random.uniform(0.05, 0.3))
            if svc == "files":
                self.shut(s)
                got = await asyncio.wait_for(self.read_all(s), 10)
                # A request trickled past --request-timeout is cut off,
                # never one that came whole before it.
                if got == b"ERR request timeout\n" and now() - t0 >= REQUEST_TIMEOUT:
                    return
                if got != b"OK %d\n" % len(self.files["small.txt"]) + self.files["small.txt"]:
                    self.refusal(got)
                    raise Violation(f"slowloris GET small.txt: got {got[:60]!r} after "
                                    f"{now() - t0:.2f} s")

    async def h_flood(self):
        svc = random.choice(("echo", "ack", "chat"))
        s = await self.connect(svc)
        chunk = os.urandom(65536) if svc == "echo" else (b"flood line " * 5 + b"\n") * 1000
        try:
            await self.push(s, 32 << 20, random.uniform(0.5, 3), chunk)
        finally:
            self.reset(s) if random.random() < 0.7 else s.close()

    async def h_paste(self):
        s = await self.connect("chat")
        lines = random.randint(100, 3000)
        text = b"".join(b"paste %d %s\n" % (i, b"p" * random.randint(0, 80)) for i in range(lines))
        with s:
            reading = random.random() < 0.5

            async def drain():
                while reading and await self.recv(s, 1 << 18):
                    pass
            task = asyncio.ensure_future(drain())
            try:
                await asyncio.wait_for(self.send(s, text), 8)
            except asyncio.TimeoutError:
                pass
            finally:
                task.cancel()

    async def h_long_line(self):
        svc = random.choice(("ack", "chat", "files", "admin", "echo"))
        n = random.choice((70_000, 200_000))
        s = await self.hostile_conn(svc)
        with s:
            async def drain():
                # Keeps the start and the end (chat sends other members'
                # lines before its ERR), bounded in bytes and time.
                head, tail, total = b"", b"", 0
                while total < 1 << 28:
                    chunk = await self.recv(s, 1 << 18)
                    if not chunk:
                        break
                    total += len(chunk)
                    head = head or chunk[:200]
                    tail = (tail + chunk)[-200:]
                return head if total <= 200 else head + b"..." + tail
            task = asyncio.ensure_future(drain())
            try:
                body = b"GET " + b"a" * n if svc == "files" else b"L" * n
                await asyncio.wait_for(self.send(s, body + b"\n"), 10)
                self.shut(s)
            except (OSError, asyncio.TimeoutError):
                pass
            got = await asyncio.wait_for(task, 10)
        # Chat may have sent joins and lines first; its ERR is the last line.
        if svc == "chat" and not (got.endswith(b"\nERR line too long\n")
                                  or got == b"ERR line too long\n"):
            self.refusal(got)
            # Seen when the sender's send buffer is full of other members'
            # lines: the ERR is not written (io.write's count is ignored).
            raise Unexpected("chat line too long: closed without ERR line too long")
        # Admin answers each bufferful with an ERR line (see the report).
        if svc == "admin" and not (got.startswith(b"ERR line too long\n") and all(
                l.startswith(b"ERR ") for l in got.split(b"\n")[:-1])):
            self.refusal(got)
            raise Violation(f"{n}-byte {svc} line: got {got[:60]!r}, want ERR line too long")
        if svc == "files" and got != b"ERR name too long\n":
            self.refusal(got)
            raise Violation(f"{n}-byte name: got {got[:60]!r}, want ERR name too long")

    async def h_loris(self):
        """Half a files request, then silence: ended at --request-timeout,
        never before, with `ERR request timeout` (GET) or no bytes (what
        could still be a bare name), and closed."""
        bare = random.random() < 0.3
        t0 = now()
        s = await self.connect("files")
        with s:
            await self.send(s, b"GE" if bare else b"GET small.t")
            try:
                got = await asyncio.wait_for(self.read_all(s, 1 << 20),
                                             REQUEST_TIMEOUT + DEADLINE_SLACK)
            except asyncio.TimeoutError:
                raise Violation(f"slow loris: not ended {REQUEST_TIMEOUT + DEADLINE_SLACK:.0f} s "
                                f"after connecting (--request-timeout {REQUEST_TIMEOUT:g})")
        elapsed = now() - t0
        self.refusal(got)
        want = b"" if bare else b"ERR request timeout\n"
        if got != want:
            raise Violation(f"slow loris ({'bare' if bare else 'GET'}): got {got[:60]!r}, "
                            f"want {want!r}")
        # The server reads the clock once per pass of its loop, so a
        # connection accepted late in a pass is stamped up to that pass's
        # length early: the same 50 ms of slack as the idle admin check.
        if elapsed < REQUEST_TIMEOUT - 0.05:
            raise Violation(f"slow loris ended after {elapsed:.2f} s, before --request-timeout "
                            f"{REQUEST_TIMEOUT:g}")

    async def h_idle_admin(self):
        """An admin connection left idle (after a command, or from the
        start): closed at --admin-idle-timeout, never before, cleanly."""
        async with self.idle_admin_sem:
            # The server's clock starts at its accept, or at its answer to
            # `help`: after these, never before.
            t0 = now()
            s = await self.connect("admin")
            with s:
                prefix = b""
                if random.random() < 0.5:
                    t0 = now()
                    await self.send(s, b"help\n")
                    prefix = await asyncio.wait_for(self.recv(s), 10)
                try:
                    got = await asyncio.wait_for(self.read_all(s, 1 << 20, prefix),
                                                 ADMIN_IDLE_TIMEOUT + DEADLINE_SLACK)
                except asyncio.TimeoutError:
                    raise Violation(f"idle admin: still open {ADMIN_IDLE_TIMEOUT + DEADLINE_SLACK:.0f}"
                                    f" s later (--admin-idle-timeout {ADMIN_IDLE_TIMEOUT:g})")
            elapsed = now() - t0
        self.refusal(got)
        if got and not (got.startswith(b"commands:") and b"ERR" not in got):
            raise Violation(f"idle admin: got {got[:60]!r}")
        if elapsed < ADMIN_IDLE_TIMEOUT - 0.05:
            raise Violation(f"idle admin closed after {elapsed:.2f} s, before "
                            f"--admin-idle-timeout {ADMIN_IDLE_TIMEOUT:g}")

    # What admin's HTTP face must answer, and the text connection that
    # turns to HTTP: (request, the answer's start, what it must not hold).
    HTTP_CASES = (
        (b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.0 200 OK\r\n", b"tcp_reactor_"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 12\r\n\r\nstats\nhelp\n",
         b"HTTP/1.0 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n", b"uptime"),
        (b"GET /other HTTP/1.0\r\n\r\n", b"HTTP/1.0 404 ", b"tcp_reactor_"),
        (b"GET /metrics HTTX/1.1\r\n\r\n", b"HTTP/1.0 400 ", b"tcp_reactor_"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\nstats\n",
         b"HTTP/1.0 431 ", b"uptime"),
        (b"help\nPOST /x HTTP/1.1\r\nHost: x\r\n\r\nstats\n", b"commands:", b"uptime"),
    )

    async def h_http(self):
        """Not a scrape: HEAD, POST with commands as its body, other paths,
        garbage, a header too long, a text connection turning to HTTP."""
        request, want, never = random.choice(self.HTTP_CASES)
        async with self.admin_sem:
            s = await self.connect("admin")
            with s:
                task = asyncio.ensure_future(self.send_pieces(s, request))
                try:
                    got = await asyncio.wait_for(self.read_all(s, 1 << 20), 10)
                finally:
                    task.cancel()
        self.refusal(got)
        if not got.startswith(want) or never in got or got.count(b"HTTP/") > 1:
            raise Violation(f"admin {request[:30]!r}: got {got[:80]!r}")
        if request.startswith(b"HEAD ") and not got.endswith(b"\r\n\r\n"):
            raise Violation(f"admin HEAD: a body came: {got[-40:]!r}")

    async def h_reset_download(self):
        s = await self.connect("files")
        await self.send(s, b"GET big.bin\n")
        want = random.randint(1, 3 << 20)
        got = 0
        while got < want:
            chunk = await asyncio.wait_for(self.recv(s, 1 << 16), 10)
            if not chunk:
                break
            got += len(chunk)
        self.reset(s)

    async def h_reset_chat_line(self):
        s = await self.connect("chat")
        await self.send(s, b"partial line, never ended " + os.urandom(random.randint(0, 100))
                        .replace(b"\n", b"."))
        await asyncio.sleep(random.random() * 0.1)
        self.reset(s)

    async def h_storm(self):
        """A connect/close storm on chat: short connections that send
        nothing, every other one ended by a reset; at most 1,000 of them and
        one second, whichever ends first. Blocking connects in bursts of 50
        (loopback completes one in microseconds, so a burst holds this
        process's loop a few milliseconds): through the loop, 250 other
        tasks would space the cycles out into no storm at all."""
        end = now() + random.uniform(0.2, 1.0)
        left = random.randint(100, 1000)
        while left > 0 and now() < end:
            for _ in range(min(50, left)):
                left -= 1
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(0.5)
                try:
                    s.connect((HOST, self.ports["chat"]))
                except OSError:
                    s.close()
                    raise
                self.reset(s) if left % 2 else s.close()
            await asyncio.sleep(0)

    async def h_bad_admin(self):
        cmd = random.choice((b"statz", b"stats xml", b"\x00\xff\xfe", b"clients json please",
                             b"stats jsonx", b"shutdown", b"\r", b"a" * 1000, b"help me"))
        async with self.admin_sem:
            s = await self.connect("admin")
            with s:
                await self.send(s, cmd + b"\n")
                self.shut(s)
                got = await asyncio.wait_for(self.read_all(s, 1 << 20), 10)
        self.refusal(got)
        if not got.startswith(b"ERR") and cmd.strip():
            raise Violation(f"admin {cmd[:20]!r}: got {got[:60]!r}, want ERR")

    BAD_NAMES = (b"../etc/passwd", b"/etc/passwd", b"sub/../../etc/passwd", b"..", b".",
                 b"sub", b"evil", b"evil-dir/passwd", b"fifo", b"a\x00b", b"sub/", b"//etc",
                 b"\xff\xfe", b"./../x", b"sub/./../../x", b"/proc/self/environ",
                 b"proc-self/environ", b"x" * 5000)

    async def h_bad_name(self):
        name = random.choice(self.BAD_NAMES)
        bare = random.random() < 0.3
        s = await self.connect("files")
        with s:
            await self.send(s, name if bare else b"GET " + name + b"\n")
            self.shut(s)
            got = await asyncio.wait_for(self.read_all(s, 1 << 20), 10)
        self.refusal(got)
        if bare and got:
            raise Violation(f"bare hostile name {name[:40]!r}: got {len(got)} bytes {got[:40]!r}")
        if not bare and not (got.startswith(b"ERR ") and got.endswith(b"\n")
                             and got.count(b"\n") == 1):
            raise Violation(f"GET {name[:40]!r}: got {got[:60]!r}, want one ERR line")

    # ---- the driver

    def behaviours(self):
        if self.good:
            return [("echo", 3, self.good_echo), ("ack", 3, self.good_ack),
                    ("get", 3, self.good_get), ("list", 1, self.good_list),
                    ("admin", 1, self.good_admin), ("scrape", 1, self.good_scrape),
                    ("chat-sender", 3, self.good_chat)]
        return [("clean-close", 2, self.h_clean_close), ("reset", 2, self.h_reset),
                ("half-close", 2, self.h_half_close), ("stall", 3, self.h_stall),
                ("slowloris", 2, self.h_slowloris), ("flood", 2, self.h_flood),
                ("chat-paste", 1, self.h_paste), ("long-line", 1, self.h_long_line),
                ("reset-download", 2, self.h_reset_download),
                ("reset-chat-line", 2, self.h_reset_chat_line),
                ("chat-storm", 1, self.h_storm),
                ("bad-admin", 1, self.h_bad_admin), ("bad-name", 2, self.h_bad_name),
                ("loris", 1, self.h_loris), ("idle-admin", 1, self.h_idle_admin),
                ("http", 1, self.h_http)]

    async def worker(self, end, table, weights):
        while now() < end and self.ops < MAX_OPS:
            self.ops += 1
            name, fn = random.choices(table, weights)[0]
            c = self.counts[name]
            c["attempted"] += 1
            try:
                await asyncio.wait_for(fn(), GOOD_TIMEOUT)
                c["ok"] += 1
            except Refused:
                c["refused"] += 1
            except Unexpected as e:
                c["errors"] += 1
                self.error_kinds[str(e)] += 1
            except Violation as e:
                c["violations"] += 1
                if len(self.violations) < 50:
                    self.violations.append(str(e))
            except asyncio.CancelledError:
                c["cancelled"] += 1
                raise
            except (OSError, asyncio.TimeoutError, EOFError) as e:
                kind = "timeout" if isinstance(e, asyncio.TimeoutError) else why(e)
                if self.good:
                    # A well-behaved client has no excuse for an error.
                    c["violations"] += 1
                    if len(self.violations) < 50:
                        self.violations.append(f"{name}: {kind}: {e}")
                elif kind in ("ECONNRESET", "EPIPE") or (
                        name == "long-line" and kind == "timeout"):
                    c["ok"] += 1  # what a hostile client may well get
                else:
                    c["errors"] += 1
                self.error_kinds[f"{name} {kind}"] += 1

    def dump(self, path):
        write_json(path, {"good": self.good, "counts": self.counts, "errors": dict(self.error_kinds),
                          "violations": self.violations, "senders": self.senders,
                          "time": time.time()})

    async def run(self):
        self.admin_sem = asyncio.Semaphore(4 if self.good else 6)
        self.idle_admin_sem = asyncio.Semaphore(IDLE_ADMINS)
        table = [(n, f) for n, _, f in self.behaviours()]
        weights = [w for _, w, _ in self.behaviours()]
        end = now() + self.secs
        tasks = [asyncio.ensure_future(self.worker(end, table, weights))
                 for _ in range(self.conns)]

        async def progress():
            while True:
                await asyncio.sleep(2)
                self.dump(self.progress)
        prog = asyncio.ensure_future(progress()) if self.progress else None
        # Hostile clients stop at the end; well-behaved ones finish what they began.
        grace = GOOD_TIMEOUT + 5 if self.good else 1
        done, pending = await asyncio.wait(tasks, timeout=self.secs + grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            if t.exception():
                self.violations.append(f"client bug: {t.exception()!r}")
        if prog:
            prog.cancel()
        self.dump(self.out)
        if self.progress:
            self.dump(self.progress)


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def load(kind, ports, root, secs, conns, out, progress=None):
    with open(ports) as f:
        ports = json.load(f)
    # Bounded whatever happens: the event loop cannot outlive this.
    signal.alarm(int(float(secs)) + 90)
    asyncio.run(Load(ports, root, secs, conns, out, progress, kind == "good").run())


# --------------------------------------------------------------------------
# Reports.


def report(good, hostile, reader_out):
    results = []
    for path in (good, hostile):
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"VIOLATION: no results from {path}: {e}")
            return 1
    try:
        with open(reader_out) as f:
            rd = json.load(f)
    except (OSError, ValueError) as e:
        print(f"VIOLATION: no results from the chat reader: {e}")
        return 1
    cols = ("attempted", "ok", "refused", "errors", "violations", "cut")
    print(f"{'behaviour':<24}" + "".join(f"{c:>11}" for c in cols)
          + "   (cut: still running at the end)")
    violations = []
    for r in results:
        who = "well-behaved" if r["good"] else "hostile"
        for name in sorted(r["counts"]):
            c = r["counts"][name]
            c["cut"] = c["attempted"] - sum(c.get(k, 0) for k in cols[1:5])
            print(f"{who[:4] + ' ' + name:<24}" + "".join(f"{c.get(k, 0):>11}" for k in cols))
        violations += r["violations"]
        if r["errors"]:
            top = sorted(r["errors"].items(), key=lambda kv: -kv[1])[:6]
            print(f"    {who} errors seen: " + ", ".join(f"{k} x{n}" for k, n in top))
    print(f"chat reader: {rd['lines']} lines ({rd['bytes']} bytes), {rd['good_lines']} from "
          f"{rd['senders_expected']} well-behaved senders, {rd['senders_short']} senders short, "
          f"{rd['garbled']} garbled lines")
    violations += rd["violations"]
    for v in violations[:30]:
        print(f"VIOLATION: {v}")
    return 1 if violations else 0


def sample(samples, elapsed, pid, admin_port, *progress):
    """One soak sample, as a JSON line: the server's descriptors, RSS, CPU
    seconds, active connections, and the errors its clients saw so far."""
    pid = int(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = mh.mem(pid)["VmRSS"]
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    data, _, err = query(int(admin_port), b"stats json", timeout=10)
    try:
        active = json.loads(data)["total"]["active"]
    except (ValueError, KeyError):
        active = None
    errors = violations = ops = 0
    for p in progress:
        try:
            with open(p) as f:
                r = json.load(f)
        except (OSError, ValueError):
            continue
        for c in r["counts"].values():
            errors += c.get("errors", 0) + c.get("violations", 0)
            violations += c.get("violations", 0)
            ops += c.get("attempted", 0)
    r = {"t": time.time(), "fds": fds, "rss_kb": rss, "cpu_s": cpu, "active": active,
         "errors": errors, "violations": violations, "ops": ops, "admin_error": err}
    with open(samples, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(f"{elapsed:>5}s {fds:>6} {rss / 1024:>10.1f} {cpu:>8.1f} "
          f"{'-' if active is None else active:>7} {errors:>7} {ops:>9}"
          + (f"  admin: {err}" if err else ""), flush=True)


def verdict(path, warmup=3):
    """Grows without bound, for a level (descriptors, RSS, connections): the
    median of the last third of the samples after the warm-up is above the
    largest of the first third by more than the tolerance. For a counter
    (CPU seconds, errors): the same on its rate per interval."""
    with open(path) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    rows = rows[warmup:]
    if len(rows) < 6:
        print(f"verdict: only {len(rows)} samples after the warm-up; need 6 (run longer)")
        return 1
    third = len(rows) // 3

    def rate(key):
        return [b[key] - a[key] for a, b in zip(rows, rows[1:])]
    # Tolerances: descriptors and connections move with what the load has in
    # flight at the instant (a few hundred connections come and go), so a
    # level may wander by a quarter plus 50; RSS by a quarter plus 16 MB (the
    # allocator keeps freed buffers, and a burst of pastes or stalls holds
    # send buffers); CPU rate by half plus 0.5 s per 10 s (the machine is
    # shared); error rate by half plus 5 per interval.
    series = {
        "fds": ([r["fds"] for r in rows], 0.25, 50),
        "rss_kb": ([r["rss_kb"] for r in rows], 0.25, 16 * 1024),
        "active": ([r["active"] or 0 for r in rows], 0.25, 50),
        "cpu_s per interval": (rate("cpu_s"), 0.5, 0.5),
        "errors per interval": (rate("errors"), 0.5, 5),
    }
    failed = False
    for name, (vals, rel, absolute) in series.items():
        n = len(vals) // 3
        first, last = vals[:n], vals[-n:]
        ref = max(first)
        med = sorted(last)[len(last) // 2]
        limit = ref * (1 + rel) + absolute
        grows = med > limit
        failed |= grows
        print(f"  {name:<20} first third max {ref:>10.1f}, last third median {med:>10.1f}, "
              f"limit {limit:>10.1f}: {'GROWS' if grows else 'flat'}")
    if rows[-1]["violations"]:
        print(f"  well-behaved clients saw {rows[-1]['violations']} violations")
        failed = True
    print(f"verdict: {'FAIL' if failed else 'PASS'} ({len(rows)} samples after a warm-up of "
          f"{warmup}, thirds of {third})")
    return 1 if failed else 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "reader":
        reader(*args)
    elif cmd in ("good", "hostile"):
        load(cmd, *args)
    elif cmd == "report":
        sys.exit(report(*args))
    elif cmd == "sample":
        sample(*args)
    elif cmd == "verdict":
        sys.exit(verdict(*args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
