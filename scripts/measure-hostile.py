#!/usr/bin/env python3
"""The clients of scripts/measure-hostile.sh (not run on its own).

    measure-hostile.py probe ECHO-PORT READY STOP SECS OUT
        the well-behaved echo client: 64-byte round trips with TCP_NODELAY,
        one a millisecond at most, until STOP exists, SECS pass or 300,000
        trips are done; writes READY after its first trip, every trip (start,
        duration) and its errors to OUT as JSON.
    measure-hostile.py ptyserve LOG STOP SECS BIN ARG...
        runs `BIN serve ARG...` with its stderr on a pseudo-terminal, copies
        what it logs to LOG until every `listening on` line (one per -l) is
        there, then never reads the terminal again: a terminal whose reader
        stalled. Stops the server (SIGTERM, then SIGKILL after 5 s) when
        STOP exists, SECS pass, or on SIGTERM itself.
    measure-hostile.py ROW PID PORT... OUT
        a hostile client (paste, joins, list, admin, full, partial, storm,
        idleadmin, loris, pty, fds) against
        the server with process id PID; its results, with the time window it
        acted in and the server's memory from /proc, go to OUT as JSON, with
        the server's `stats json` (admin port $MH_ADMIN) and the warnings in
        its log ($MH_LOG) taken before the row's clients close.
    measure-hostile.py report ROW PROBE-OUT ROW-OUT [LABEL]
        the row's lines of figures: the echo client's worst and p99 round
        trip over the row's window, with the targets.

Every loop is bounded in count and time; every address is 127.0.0.1.
"""

import collections
import errno
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"
now = time.monotonic


def mem(pid):
    """VmRSS and VmHWM of the process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def why(e):
    """An OSError as its errno name (ECONNRESET), or its type."""
    return errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def snapshot():
    """The server's counters (admin `stats json`, on $MH_ADMIN) and the
    warnings in its log ($MH_LOG) now, while the row's clients are still
    connected: their own exit makes more (chat leaves to members that have
    stopped reading)."""
    out = {}
    port, log = os.environ.get("MH_ADMIN"), os.environ.get("MH_LOG")
    if port:
        data, _, error = query(int(port), b"stats json", timeout=5)
        try:
            answer = json.loads(data)
            out["stats"] = answer["total"]
            out["log_lines_dropped"] = answer.get("log_lines_dropped")
        except (ValueError, KeyError):
            out["stats_error"] = error or data[:60].decode(errors="replace").strip()
    if log:
        with open(log, errors="replace") as f:
            warns = [l.split("] ", 1)[-1].strip() for l in f if " WARN " in l]
        kinds = collections.Counter(re.sub(r"\d+", "N", w) for w in warns)
        out["warnings"] = len(warns)
        out["warn_kinds"] = kinds.most_common(3)
    return out


def finish(out, obj):
    obj["snap"] = snapshot()
    write_json(out, obj)


def addr(sock):
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


# --------------------------------------------------------------------------
# The innocent client.


def probe(port, ready, stop, secs, out):
    port, secs = int(port), float(secs)
    msg = bytes(range(64))
    samples, errors, mismatches = [], [], 0
    s = socket.create_connection((HOST, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    end = now() + secs
    while len(samples) < 300_000 and now() < end:
        if samples and os.path.exists(stop):
            break
        t0 = now()
        got = b""
        try:
            s.sendall(msg)
            while len(got) < 64:
                chunk = s.recv(64 - len(got))
                if not chunk:
                    raise ConnectionError("closed by the server")
                got += chunk
        except OSError as e:
            errors.append(f"{type(e).__name__}: {e} after {now() - t0:.3f} s")
            break
        t1 = now()
        if got != msg:
            mismatches += 1
        samples.append((t0, t1 - t0))
        if len(samples) == 1:
            open(ready, "w").close()
        if t1 - t0 < 0.001:
            time.sleep(0.001 - (t1 - t0))
    if not samples:
        open(ready, "w").close()
    write_json(out, {"samples": samples, "errors": errors, "mismatches": mismatches})


# --------------------------------------------------------------------------
# Line counting for many non-blocking sockets.


SUMMARY = re.compile(rb"^\* (\d+) joined, \d+ left$", re.M)


class Lines:
    """What one chat socket received: line counts and the drop notices."""

    def __init__(self, sock):
        self.sock = sock
        self.tail = b""
        self.lines = 0
        self.joined = 0
        self.too_slow = False  # got `* disconnected: too slow`
        self.left_too_slow = 0  # `* PEER left (too slow)` announcements
        self.eof = False
        self.error = None
        self.bytes = 0
        self.on_line = None  # optional per-line callback

    def read(self):
        """Reads what is there; False once the socket is finished."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            self.error = type(e).__name__
            return False
        if not data:
            self.eof = True
            return False
        self.bytes += len(data)
        data = self.tail + data
        cut = data.rfind(b"\n") + 1
        whole, self.tail = data[:cut], data[cut:]
        if whole:
            self.lines += whole.count(b"\n")
            self.joined += whole.count(b" joined\n")
            # A burst's summary, `* N joined, M left`, counts N joins.
            self.joined += sum(int(n) for n in SUMMARY.findall(whole))
            self.left_too_slow += whole.count(b" left (too slow)\n")
            if b"* disconnected: too slow" in whole:
                self.too_slow = True
            if self.on_line:
                for line in whole.split(b"\n")[:-1]:
                    self.on_line(line)
        return True

    @property
    def dropped(self):
        return self.too_slow or self.eof or self.error is not None


def pump(sel, timeout):
    """One round of reads; the number of sockets that had something."""
    events = sel.select(timeout)
    for key, _ in events:
        if not key.data.read():
            sel.unregister(key.fileobj)
    return len(events)


def settle(sel, quiet, limit):
    """Reads until nothing arrives for `quiet` seconds, or `limit` passes."""
    last, end = now(), now() + limit
    while now() < end and now() - last < quiet and sel.get_map():
        if pump(sel, 0.05):
            last = now()


def summary(group):
    return {
        "n": len(group),
        "too_slow": sum(c.too_slow for c in group),
        "eof": sum(c.eof and not c.too_slow for c in group),
        "errors": sum(c.error is not None for c in group),
        "lines": sum(c.lines for c in group),
        "left_too_slow": sum(c.left_too_slow for c in group),
    }


def connect_nb(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((HOST, port))
    return s


# --------------------------------------------------------------------------
# The hostile rows.


def row_paste(pid, port, out, lines=20_000, limit=60.0):
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    sel = selectors.DefaultSelector()
    readers = []
    for _ in range(2):
        s = socket.create_connection((HOST, port), timeout=5)
        s.setblocking(False)
        r = Lines(s)
        readers.append(r)
        sel.register(s, selectors.EVENT_READ, r)
    paster = socket.create_connection((HOST, port), timeout=5)
    me = addr(paster).encode()
    prefix = b"[" + me + b"] "
    for r in readers:
        r.expect, r.in_order, r.got, r.done_at = 1, True, 0, None

        def on_line(line, r=r):
            if line.startswith(prefix):
                r.got += 1
                if line[len(prefix):] != b"%d" % r.expect:
                    r.in_order = False
                r.expect += 1
                if r.got == lines and r.done_at is None:
                    r.done_at = now()

        r.on_line = on_line
    # Both readers hear the paster join: all three are members.
    end = now() + 10
    while now() < end and any(r.joined < 1 and not r.dropped for r in readers):
        pump(sel, 0.05)
    paster.setblocking(False)
    p = Lines(paster)
    data = b"".join(b"%d\n" % i for i in range(1, lines + 1))
    sent = 0
    sel.register(paster, selectors.EVENT_READ | selectors.EVENT_WRITE, p)
    t0 = now()
    end = t0 + limit
    while now() < end and any(r.got < lines and not r.dropped for r in readers):
        for key, ev in sel.select(0.05):
            c = key.data
            if ev & selectors.EVENT_WRITE and c is p:
                try:
                    sent += paster.send(data[sent:sent + (1 << 20)])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    p.error = type(e).__name__
                if sent == len(data) or p.error:
                    sel.modify(paster, selectors.EVENT_READ, p)
            if ev & selectors.EVENT_READ and not c.read():
                sel.unregister(key.fileobj)
    t1 = now()
    settle(sel, 0.5, 3)  # late drop notices and announcements
    finish(out, {
        "window": [t0, now()], "lines": lines, "sent": sent, "size": len(data),
        "timed_out": t1 >= end,
        "readers": [{"got": r.got, "in_order": r.in_order, "too_slow": r.too_slow,
                     "eof": r.eof, "error": r.error, "left_too_slow": r.left_too_slow,
                     "secs": None if r.done_at is None else r.done_at - t0}
                    for r in readers],
        "paster": {"lines": p.lines, "too_slow": p.too_slow, "eof": p.eof,
                   "error": p.error, "left_too_slow": p.left_too_slow},
        "mem0": m0, "mem1": mem(pid),
    })


def row_joins(pid, port, out, n=3500, limit=60.0):
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    sel = selectors.DefaultSelector()
    readers = []
    for _ in range(2):
        s = socket.create_connection((HOST, port), timeout=5)
        s.setblocking(False)
        r = Lines(s)
        readers.append(r)
        sel.register(s, selectors.EVENT_READ, r)
    settle(sel, 0.2, 2)
    for r in readers:
        r.joined = 0  # count the joiners' announcements only
    t0 = now()
    joiners = []
    for i in range(n):
        j = Lines(connect_nb(port))
        joiners.append(j)
        sel.register(j.sock, selectors.EVENT_READ, j)
        if i % 50 == 49:
            pump(sel, 0)  # everybody reads while the others connect
    end = t0 + limit
    while now() < end and any(r.joined < n and not r.dropped for r in readers):
        pump(sel, 0.05)
    t1 = now()
    settle(sel, 1.0, max(1.0, end - now()))
    t2 = now()
    finish(out, {
        "window": [t0, t2], "n": n, "secs": t1 - t0, "timed_out": t1 >= end,
        "readers": summary(readers), "joiners": summary(joiners),
        "reader_joins": [r.joined for r in readers],
        "joiners_connected": sum(j.error is None for j in joiners),
        "mem0": m0, "mem1": mem(pid),
    })


def row_list(pid, port, out, times=5):
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    t0 = now()
    runs = []
    for _ in range(times):
        runs.append(list_once(port))
        time.sleep(0.05)
    finish(out, {"window": [t0, now()], "runs": runs, "mem0": m0, "mem1": mem(pid)})


def list_once(port, limit=30.0):
    t0 = now()
    s = socket.create_connection((HOST, port), timeout=5)
    s.settimeout(limit)
    s.sendall(b"LIST\n")
    s.shutdown(socket.SHUT_WR)
    first, error = None, None
    size = names = 0
    t_first = None
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            if t_first is None:
                t_first = now()
                first = chunk[:40].split(b"\n")[0].decode(errors="replace")
            size += len(chunk)
            names += chunk.count(b"\n")
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    s.close()
    t1 = now()
    return {"names": names, "bytes": size, "first": first, "error": error,
            "secs": t1 - t0, "first_byte": None if t_first is None else t_first - t0}


def query(port, command, timeout=10.0):
    """One admin command on a fresh connection: (answer, seconds, error)."""
    t0 = now()
    data, errors = b"", []
    try:
        s = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as e:
        return data, now() - t0, f"connect: {why(e)}"
    with s:
        try:
            s.sendall(command + b"\n")
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(f"send: {why(e)}")
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            errors.append(f"recv: {why(e)}")
    return data, now() - t0, ", ".join(errors) or None


def hold(port, n):
    """n idle echo connections, each proven served by one byte's round trip.
    Returns (sockets served, sockets refused with their first answer)."""
    served, refused = [], []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(b"x")
        answer = s.recv(64)
        (served if answer == b"x" else refused).append((s, answer))
    return served, refused


def row_admin(pid, echo_port, admin_port, out, n=8000, queries=5):
    pid, echo_port, admin_port = int(pid), int(echo_port), int(admin_port)
    m0 = mem(pid)
    t = now()
    served, refused = hold(echo_port, n)
    opened = now() - t
    answers = []
    t0 = now()
    for _ in range(queries):
        data, secs, error = query(admin_port, b"clients json")
        rows = None
        try:
            rows = len(json.loads(data)["clients"])
        except (ValueError, KeyError, TypeError):
            pass
        answers.append({"bytes": len(data), "rows": rows, "secs": secs, "error": error,
                        "head": data[:60].decode(errors="replace")})
        time.sleep(0.05)
    t1 = now()
    finish(out, {
        "window": [t0, t1], "n": n, "served": len(served), "refused": len(refused),
        "open_secs": opened, "answers": answers, "mem0": m0, "mem1": mem(pid),
    })


def row_full(pid, echo_port, admin_port, out, fill=99):
    pid, echo_port, admin_port = int(pid), int(echo_port), int(admin_port)
    m0 = mem(pid)
    t0 = now()
    served, refused = hold(echo_port, int(fill))
    # One more echo client: is the server full?
    extra, _, extra_error = query(echo_port, b"", timeout=5)
    answers = []
    for _ in range(10):
        data, secs, error = query(admin_port, b"stats", timeout=5)
        answers.append({"text": data.decode(errors="replace"), "secs": secs, "error": error})
        time.sleep(0.05)
    t1 = now()
    finish(out, {
        "window": [t0, t1], "fill": int(fill), "served": len(served),
        "refused": len(refused), "extra": extra.decode(errors="replace"),
        "extra_error": extra_error, "answers": answers, "mem0": m0, "mem1": mem(pid),
    })


def row_partial(pid, port, service, out, n=3000, limit=60.0):
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    t0 = now()
    sel = selectors.DefaultSelector()
    clients = []
    end = t0 + limit
    for i in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        s.setblocking(False)
        c = Lines(s)
        clients.append(c)
        sel.register(s, selectors.EVENT_READ, c)
        if i % 100 == 99:
            # Joins in batches of 100, every announcement read between
            # them: chat's join storm (the joins row) stays out of this one.
            settle(sel, 0.05, end - now())
    settle(sel, 0.5, end - now())
    m1 = mem(pid)
    before = sum(c.bytes for c in clients)
    for c in clients:
        try:
            c.sock.send(b"x")
        except OSError as e:
            c.error = type(e).__name__
    settle(sel, 1.0, max(1.0, end - now()))
    time.sleep(0.5)
    m2 = mem(pid)
    finish(out, {
        "window": [t0, now()], "n": n, "service": service,
        "after_bytes": sum(c.bytes for c in clients) - before,
        "clients": summary(clients), "mem0": m0, "mem1": m1, "mem2": m2,
    })


def scrape(port, timeout=10.0):
    """One Prometheus scrape of admin on `port`: the status line, the
    Retry-After header if any, the body's size and the seconds it took."""
    t0 = now()
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
    data, error = b"", None
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(request)
            while len(data) < 1 << 24:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        error = why(e)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    retry = next((l.split(":", 1)[1].strip() for l in lines[1:]
                  if l.lower().startswith("retry-after:")), None)
    return {"status": lines[0].strip() if data else "", "retry_after": retry, "body": len(body),
            "secs": now() - t0, "error": error}


def row_idleadmin(pid, admin_port, out, n=16, limit=90.0):
    """The whole admin reserve held by idle connections, then scrapes once a
    second until one is answered 200 (bounded)."""
    pid, port = int(pid), int(admin_port)
    m0 = mem(pid)
    t0 = now()
    idle = [socket.create_connection((HOST, port), timeout=5) for _ in range(int(n))]
    time.sleep(0.2)  # all accepted: they hold the reserve
    scrapes = [dict(scrape(port), at=now() - t0)]
    while not scrapes[-1]["status"].startswith("HTTP/1.0 200") and now() - t0 < limit:
        time.sleep(1)
        scrapes.append(dict(scrape(port), at=now() - t0))
    closed = 0
    for s in idle:
        s.setblocking(False)
        try:
            closed += s.recv(64) == b""
        except OSError:
            pass
        s.close()
    finish(out, {"window": [t0, now()], "n": int(n), "scrapes": scrapes, "closed": closed,
                 "mem0": m0, "mem1": mem(pid)})


def row_loris(pid, files_port, out, n=299, limit=60.0):
    """n files connections send `GET a.t` and stop (with the echo client,
    the server's --max-conns 300 are taken); a newcomer asks for a.t once
    every 100 ms until it is served (bounded)."""
    pid, port = int(pid), int(files_port)
    m0 = mem(pid)
    t0 = now()
    sel = selectors.DefaultSelector()
    loris = []
    for _ in range(int(n)):
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(b"GET a.t")
        s.setblocking(False)
        c = Lines(s)
        c.got = []
        c.on_line = c.got.append
        loris.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    filled = now()
    attempts, first, served = 0, None, None
    while now() - filled < limit:
        attempts += 1
        data, _, error = query(port, b"GET a.t", timeout=5)
        if first is None:
            first = data.split(b"\n")[0].decode(errors="replace") or error or "nothing"
        if data.startswith(b"OK "):
            served = now() - filled
            break
        pump(sel, 0.1)  # the loris read what they are sent meanwhile
    settle(sel, 0.5, 5)
    answers = collections.Counter(b"/".join(c.got).decode(errors="replace") or
                                  ("closed, no bytes" if c.eof else c.error or "nothing")
                                  for c in loris)
    finish(out, {"window": [t0, now()], "n": int(n), "fill_secs": filled - t0,
                 "attempts": attempts, "first": first, "served_after": served,
                 "loris_answers": answers.most_common(4),
                 "loris_closed": sum(c.eof for c in loris), "mem0": m0, "mem1": mem(pid)})


def ptyserve(log, stop, secs, binary, *args):
    """The server with its stderr on a terminal nobody reads (see the
    module docs)."""
    secs = float(secs)
    want = sum(a in ("-l", "--listen") for a in args)
    master, slave = os.openpty()
    server = subprocess.Popen([binary, "serve", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)

    def end(*_):
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        os.close(master)
        sys.exit(0)

    signal.signal(signal.SIGTERM, end)
    seen, text, limit = 0, b"", now() + 10
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ)
    with open(log, "wb") as f:
        while seen < want and now() < limit and server.poll() is None:
            if sel.select(0.1):
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                text += data
                f.write(data.replace(b"\r\n", b"\n"))
                f.flush()
                seen = text.count(b"listening on ")
    sel.close()
    # From here on nobody reads the terminal.
    end_at = now() + secs
    while now() < end_at and not os.path.exists(stop) and server.poll() is None:
        time.sleep(0.1)
    end()


def row_pty(pid, port, out, n=400, lines=25, limit=120.0):
    """n ack clients one after another, each sending `lines` messages (each
    logged, with -v the open and close too) and reading every reply, each
    bounded by 10 s; a client that gets no answer ends the row."""
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    t0 = now()
    end = t0 + limit
    served, errors, slowest = 0, [], 0.0
    for i in range(n):
        if now() > end:
            errors.append("row time limit")
            break
        c0 = now()
        try:
            with socket.create_connection((HOST, port), timeout=10) as s:
                s.settimeout(10)
                s.sendall(b"".join(b"client %d message %d\n" % (i, k) for k in range(lines)))
                got = b""
                while got.count(b"\n") < lines:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed by the server")
                    got += chunk
            served += 1
            slowest = max(slowest, now() - c0)
        except OSError as e:
            errors.append(f"client {i}: {type(e).__name__}: {e} after {now() - c0:.1f} s")
            break
    finish(out, {"window": [t0, now()], "n": n, "lines": lines, "served": served,
                 "errors": errors, "slowest": slowest, "mem0": m0, "mem1": mem(pid)})


def row_fds(pid, port, out, n=1200, wait=10.0):
    """n echo clients at once, each sending one byte: served (the byte comes
    back), refused (a line, then the close) or hung (nothing within `wait`
    seconds of the last connect)."""
    pid, port = int(pid), int(port)
    m0 = mem(pid)
    t0 = now()
    sel = selectors.DefaultSelector()
    fate = collections.Counter()
    answers = collections.Counter()
    held = []
    for _ in range(int(n)):
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"x")
        except OSError as e:
            fate["connect " + why(e)] += 1
            continue
        s.setblocking(False)
        held.append(s)
        sel.register(s, selectors.EVENT_READ, [b""])
    end = now() + wait
    while sel.get_map() and now() < end:
        for key, _ in sel.select(0.1):
            got = key.data
            try:
                chunk = key.fileobj.recv(256)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                chunk, got[0] = b"", got[0] or why(e).encode()
            if chunk:
                got[0] += chunk
                if got[0] != b"x" and not got[0].endswith(b"\n"):
                    continue
            sel.unregister(key.fileobj)
            if got[0] == b"x":
                fate["served"] += 1
            else:
                fate["refused"] += 1
                answers[got[0].decode(errors="replace").strip() or "closed"] += 1
    fate["hung"] += len(sel.get_map())
    t1 = now()
    limits = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                limits = dict(zip(("soft", "hard"), line.split()[3:5]))
    obj = {"window": [t0, t1], "n": int(n), "fate": fate, "answers": answers,
           "limits": limits, "mem0": m0, "mem1": mem(pid)}
    obj["snap"] = snapshot()
    data, _, _ = query(int(os.environ["MH_ADMIN"]), b"stats json", timeout=5)
    try:
        obj["max_conns"] = json.loads(data).get("max_conns", "absent")
    except ValueError:
        obj["max_conns"] = "no answer"
    write_json(out, obj)
    for s in held:
        s.close()


def chat_stats(port):
    """The chat service's counters from admin `stats json` on `port`."""
    data, _, error = query(int(port), b"stats json", timeout=5)
    try:
        return json.loads(data)["services"]["chat"]
    except (ValueError, KeyError):
        sys.exit(f"admin stats json: {error or data[:60]!r}")


def row_storm(pid, port, admin_port, out, members=1500, cycles=100_000, limit=6.0):
    """`members` idle chat members (never reading while it lasts), then
    connect/close cycles on chat as fast as one client goes, at most
    `cycles` or `limit` seconds; then the members read what was queued for
    them."""
    pid, port = int(pid), int(port)
    # As many members as the descriptor limit allows, with room to spare for
    # the storm's socket and the admin queries.
    members = max(1, min(int(members), resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100))
    m0 = mem(pid)
    sel = selectors.DefaultSelector()
    group = []
    for i in range(members):
        s = socket.create_connection((HOST, port), timeout=5)
        s.setblocking(False)
        c = Lines(s)
        group.append(c)
        sel.register(s, selectors.EVENT_READ, c)
        if i % 100 == 99:
            pump(sel, 0)
    # The members' own joins, read before the storm begins.
    settle(sel, 0.5, 30)
    before = [c.bytes for c in group]
    st0 = chat_stats(admin_port)
    t0 = now()
    n, errors = 0, collections.Counter()
    while n < cycles and now() - t0 < limit and sum(errors.values()) < 100:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((HOST, port))
            n += 1
        except OSError as e:
            errors[why(e)] += 1
        s.close()
    t1 = now()
    # What the server wrote to chat sockets while the storm lasted (the
    # members' queued bytes go out as they read, after it).
    st1 = chat_stats(admin_port)
    settle(sel, 1.0, 10)
    got = sorted(c.bytes - b for c, b in zip(group, before))
    finish(out, {
        "window": [t0, t1], "members": members, "cycles": n, "secs": t1 - t0,
        "errors": dict(errors), "group": summary(group),
        "written_storm": st1["bytes_out"] - st0["bytes_out"],
        "written_all": chat_stats(admin_port)["bytes_out"] - st0["bytes_out"],
        "got_max": got[-1], "got_median": got[len(got) // 2],
        "mem0": m0, "mem1": mem(pid),
    })


# --------------------------------------------------------------------------
# Reports.


def rt_stats(probe, window=None):
    durs = [d for t, d in probe["samples"]
            if window is None or (t < window[1] and t + d > window[0])]
    if not durs:
        return None
    durs.sort()
    p99 = durs[max(0, -(-len(durs) * 99 // 100) - 1)]
    return {"n": len(durs), "worst": durs[-1] * 1000, "p99": p99 * 1000}


def ms(x):
    return f"{x:.1f} ms" if x >= 1 else f"{x:.2f} ms"


def mb(kb):
    return f"{kb / 1024:+.1f} MB"


def rt_text(probe, window, target=None):
    st = rt_stats(probe, window)
    if st is None:
        return "no round trip measured"
    t = f" (target < {target} ms)" if target else ""
    return f"worst round trip {ms(st['worst'])}{t}, p99 {ms(st['p99'])} ({st['n']} trips)"


def probe_text(probe):
    bad = []
    if probe["errors"]:
        bad.append("errors: " + "; ".join(probe["errors"]))
    if probe["mismatches"]:
        bad.append(f"{probe['mismatches']} wrong echoes")
    return f"echo client: {len(probe['samples'])} round trips, " + (
        ", ".join(bad) if bad else "no errors")


def growth(r, last="mem1"):
    """Peak RSS growth: VmHWM at the end minus VmRSS at the start."""
    return mb(r[last]["VmHWM"] - r["mem0"]["VmRSS"])


def snap_text(r):
    """The server's own count, taken before the clients closed."""
    snap = r.get("snap", {})
    parts = []
    st = snap.get("stats")
    if st:
        c, ref = st["closed"], st["refused"]
        parts.append(f"server stats: accepted {st['accepted']}, closed as too slow "
                     f"(limit) {c['limit']}, by error {c['error']}, by peer {c['peer']}, "
                     f"refused full {ref['full']}")
    elif "stats_error" in snap:
        parts.append(f"server stats: admin said '{snap['stats_error']}'")
    if snap.get("warnings"):
        kinds = "; ".join(f"{n} x '{k}'" for k, n in snap["warn_kinds"])
        parts.append(f"log: {snap['warnings']} warnings ({kinds})")
    log = os.environ.get("MH_LOG")
    if log and "warnings" in snap:
        with open(log, errors="replace") as f:
            later = sum(" WARN " in l for l in f) - snap["warnings"]
        if later:
            parts.append(f"{later} more warnings once the row's clients closed")
    return "    " + "; ".join(parts) if parts else None


def yes(b):
    return "yes" if b else "NO"


def report(row, probe_path, row_path, label=""):
    with open(probe_path) as f:
        probe = json.load(f)
    with open(row_path) as f:
        r = json.load(f)
    w = r["window"]
    p = lambda *a: print(*a, sep="")
    if row == "paste":
        rs = r["readers"]
        full = all(x["got"] == r["lines"] and x["in_order"] for x in rs)
        slow = sum(x["too_slow"] for x in rs) + r["paster"]["too_slow"]
        left = sum(x["left_too_slow"] for x in rs) + r["paster"]["left_too_slow"]
        secs = [x["secs"] for x in rs]
        when = (f"delivered in {max(secs) * 1000:.0f} ms" if all(s is not None for s in secs)
                else "not delivered to every reader" + (" (timed out)" if r["timed_out"] else ""))
        p(f"chat paste of {r['lines']:,} lines to 2 readers: every reader got all, in order: "
          f"{yes(full)} (target yes); readers got {', '.join(str(x['got']) for x in rs)}; "
          f"'* disconnected: too slow' {slow}, 'left (too slow)' {left} (target 0, 0); {when}; "
          f"{rt_text(probe, w)}; RSS {growth(r)}")
        p(f"    paster: sent {r['sent']:,} of {r['size']:,} bytes, "
          f"received {r['paster']['lines']} lines"
          f"{', closed by the server' if r['paster']['eof'] else ''}"
          f"{', ' + r['paster']['error'] if r['paster']['error'] else ''}; "
          + "; ".join(f"reader {i + 1}: {x['got']} lines"
                      f"{', too slow' if x['too_slow'] else ''}"
                      f"{', closed' if x['eof'] else ''}"
                      f"{', ' + x['error'] if x['error'] else ''}"
                      f"{'' if x['in_order'] else ', OUT OF ORDER'}"
                      for i, x in enumerate(rs))
          + f"; {probe_text(probe)}")
    elif row == "joins":
        rd, jn = r["readers"], r["joiners"]
        p(f"{r['n']:,} chat joins at once: readers dropped as too slow {rd['too_slow']} of "
          f"{rd['n']}, joiners dropped as too slow {jn['too_slow']} of {jn['n']} (target 0, 0); "
          f"readers saw {'/'.join(str(x) for x in r['reader_joins'])} joins in "
          f"{r['secs']:.2f} s{' (timed out)' if r['timed_out'] else ''}; "
          f"{rt_text(probe, w)}; RSS {growth(r)}")
        p(f"    readers: {rd['lines']} lines, {rd['eof']} closed, {rd['errors']} errors, "
          f"{rd['left_too_slow']} 'left (too slow)'; joiners: "
          f"{r['joiners_connected']} connected, {jn['lines']:,} lines, {jn['eof']} closed "
          f"otherwise, {jn['errors']} errors, {jn['left_too_slow']:,} 'left (too slow)'; "
          f"{probe_text(probe)}")
    elif row == "list":
        runs = r["runs"]
        names = sorted({x["names"] for x in runs})
        size = sorted({x["bytes"] for x in runs})
        errs = sorted({x["error"] for x in runs if x["error"]})
        secs = sorted(x["secs"] for x in runs)
        firsts = [x["first_byte"] for x in runs if x["first_byte"] is not None]
        p(f"LIST {label}: {rt_text(probe, w, 20)}, names {'/'.join(f'{x:,}' for x in names)}, "
          f"RSS {growth(r)}")
        p(f"    {len(runs)} LISTs one after another: {'/'.join(f'{x:,}' for x in size)} bytes, "
          f"each in {secs[0] * 1000:.0f}-{secs[-1] * 1000:.0f} ms, first byte after "
          + (f"{min(firsts) * 1000:.1f}-{max(firsts) * 1000:.1f} ms" if firsts else "never")
          + (f", errors: {'; '.join(errs)}" if errs else "") + f"; {probe_text(probe)}")
    elif row == "admin":
        a = r["answers"]
        sizes = sorted({x["bytes"] for x in a})
        rows = sorted({x["rows"] for x in a}, key=str)
        errs = [x["error"] for x in a if x["error"]]
        p(f"admin 'clients json' x{len(a)} with {r['served']:,} connections: "
          f"{rt_text(probe, w, 20)}; answers {', '.join(f'{s:,}' for s in sizes)} bytes, "
          f"{'/'.join(str(x) for x in rows)} rows, slowest answer "
          f"{max(x['secs'] for x in a) * 1000:.0f} ms"
          f"{'; errors: ' + '; '.join(errs) if errs else ''}; RSS {growth(r)}")
        p(f"    {r['served']} idle echo connections opened in {r['open_secs']:.1f} s "
          f"({r['refused']} refused); {probe_text(probe)}")
    elif row == "full":
        got = collections.Counter()
        for x in r["answers"]:
            text = x["text"].strip()
            what = (f"'{text.splitlines()[0]}'" + (f" + {len(text.splitlines()) - 1} lines"
                                                  if "\n" in text else "")
                    if text else "nothing")
            if x["error"]:
                what += f" ({x['error']})"
            got[what] += 1
        answered = all(x["text"].strip() and not x["text"].startswith("ERR")
                       for x in r["answers"])
        p(f"--max-conns 100 full (the echo client + {r['served']} idle): the operator's "
          f"{len(r['answers'])} 'stats' got " + ", ".join(f"{n} x {k}" for k, n in got.items())
          + f"; stats answered: {yes(answered)} (target yes); {rt_text(probe, w)}")
        p(f"    fill: {r['served']} served, {r['refused']} refused; one more echo client got "
          f"'{r['extra'].strip() or r['extra_error'] or 'nothing'}'; {probe_text(probe)}")
    elif row == "partial":
        c = r["clients"]
        total = r["mem2"]["VmHWM"] - r["mem0"]["VmRSS"]
        step = r["mem2"]["VmRSS"] - r["mem1"]["VmRSS"]
        p(f"{r['n']:,} one-byte partial lines ({r['service']}): RSS {mb(total)} (target < +24 MB)"
          f" peak over the row, of which the one-byte sends {mb(step)}; "
          f"{rt_text(probe, w)}")
        p(f"    clients: {c['lines']:,} lines received ({r['after_bytes']} bytes after the "
          f"one-byte sends), {c['too_slow']} too slow, {c['eof']} closed, {c['errors']} errors; "
          f"server VmRSS {r['mem0']['VmRSS']} -> {r['mem1']['VmRSS']} (connected) -> "
          f"{r['mem2']['VmRSS']} kB (sent); {probe_text(probe)}")
    elif row == "idleadmin":
        sc = r["scrapes"]
        last = sc[-1]
        first = sc[0]
        retry = f", Retry-After {first['retry_after']}" if first["retry_after"] else ""
        ok = last["status"].startswith("HTTP/1.0 200")
        p(f"{r['n']} idle admin connections, then a scrape: first answered "
          f"'{first['status'] or first['error'] or 'nothing'}'{retry}; a scrape answered 200 "
          + (f"after {last['at']:.1f} s" if ok else "never") + f" ({len(sc)} scrapes, once a "
          f"second; target: 200 within --admin-idle-timeout); {rt_text(probe, w)}")
        statuses = collections.Counter(x["status"] or x["error"] or "nothing" for x in sc)
        p(f"    answers: " + ", ".join(f"{n} x '{k}'" for k, n in statuses.items())
          + f"; {r['closed']} of {r['n']} idle ones closed by the server; {probe_text(probe)}")
    elif row == "loris":
        served = r["served_after"]
        p(f"slow loris: {r['n']} files connections sent 'GET a.t' and stopped, filling "
          f"--max-conns 300 with the echo client: a newcomer was served "
          + (f"after {served:.1f} s" if served is not None else "never")
          + f" (target: within --request-timeout, 10 s); {rt_text(probe, w)}; "
          f"RSS {growth(r)}")
        p(f"    the newcomer's first answer '{r['first']}', {r['attempts']} tries; the loris "
          f"got " + ", ".join(f"{n} x '{k}'" for k, n in r["loris_answers"])
          + f", {r['loris_closed']} closed; filled in {r['fill_secs']:.1f} s; "
          f"{probe_text(probe)}")
    elif row == "pty":
        snap = r.get("snap", {}).get("stats_error")
        p(f"stalled terminal (-v, {r['n']} ack clients x {r['lines']} messages logged into a pty "
          f"nobody reads): ack clients served {r['served']} of {r['n']} (target all), slowest "
          f"{r['slowest'] * 1000:.0f} ms; {rt_text(probe, w)}")
        p(f"    {'; '.join(r['errors']) or 'no client errors'}; "
          f"log lines dropped: {r.get('snap', {}).get('log_lines_dropped', 'unknown')}"
          f"{'; admin: ' + snap if snap else ''}; {probe_text(probe)}")
    elif row == "fds":
        f = r["fate"]
        answers = ", ".join(f"{n} x '{a}'" for a, n in r["answers"].items())
        p(f"{r['n']:,} echo clients at once, {label}: served {f.get('served', 0)}, refused "
          f"{f.get('refused', 0)}, hung {f.get('hung', 0)} (target 0 hung); server limit "
          f"{r['limits'].get('soft')}/{r['limits'].get('hard')}, max-conns {r['max_conns']}; "
          f"{rt_text(probe, w)}")
        other = {k: v for k, v in f.items() if k not in ("served", "refused", "hung")}
        p(f"    refusals: {answers or 'none'}"
          f"{'; ' + ', '.join(f'{n} x {k}' for k, n in other.items()) if other else ''}; "
          f"{probe_text(probe)}")
    elif row == "storm":
        g = r["group"]
        dismissed = g["too_slow"] + g["eof"] + g["errors"]
        lim = r.get("snap", {}).get("stats", {}).get("closed", {}).get("limit", "?")
        errs = ", ".join(f"{n} x {k}" for k, n in r["errors"].items())
        p(f"chat connect/close storm: {r['cycles']:,} cycles in {r['secs']:.1f} s against "
          f"{r['members']:,} idle members: members dropped {dismissed} (closed as too slow "
          f"{lim}; target 0); server wrote {r['written_all'] / 1e6:.2f} MB to chat "
          f"({r['written_storm'] / 1e6:.2f} MB during the storm; "
          f"{r['written_all'] / max(1, r['cycles']):.0f} bytes per cycle); {rt_text(probe, w)}; "
          f"RSS {growth(r)}")
        p(f"    each member received {r['got_median']:,} bytes (median), {r['got_max']:,} (most);"
          f" members: {g['lines']:,} lines, {g['too_slow']} too slow, {g['eof']} closed, "
          f"{g['errors']} errors" + (f"; storm connect errors: {errs}" if errs else "")
          + f"; {probe_text(probe)}")
    else:
        sys.exit(f"unknown row {row}")
    line = snap_text(r)
    if line:
        p(line)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "probe":
        probe(*args)
    elif cmd == "ptyserve":
        ptyserve(*args)
    elif cmd == "report":
        report(*args)
    else:
        {"paste": row_paste, "joins": row_joins, "list": row_list, "admin": row_admin,
         "full": row_full, "partial": row_partial, "storm": row_storm,
         "idleadmin": row_idleadmin, "loris": row_loris, "pty": row_pty,
         "fds": row_fds}[cmd](*args)


if __name__ == "__main__":
    main()
