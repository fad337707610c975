"""An HTTP/2 client for the tests, over clear text with prior knowledge (h2c), built on the
``h2`` package so that it can also misbehave on purpose. Prints one JSON object.

    h2probe.py PORT get PATH [HEADER=VALUE ...]   one request; status, headers, body
    h2probe.py PORT streams N PATH                 N requests at once on one connection
    h2probe.py PORT post PATH BYTES                a POST of BYTES bytes
    h2probe.py PORT big-headers BYTES COUNT        COUNT header fields of BYTES bytes each
    h2probe.py PORT hpack-bomb COUNT               one 4 KiB value, then COUNT references to it
    h2probe.py PORT rapid-reset SECONDS            streams opened and reset at once, as fast as it can
    h2probe.py PORT continuation SECONDS           one header block that never ends
    h2probe.py PORT ping SECONDS                   PINGs as fast as it can, reading the answers
    h2probe.py PORT settings SECONDS               SETTINGS frames as fast as it can
    h2probe.py PORT zero-window PATH               reads nothing of the response: window 0
    h2probe.py PORT idle                           opens a connection, sends nothing more
    h2probe.py PORT server-settings                the SETTINGS the server announces

Floods stop at the first GOAWAY or close, or after SECONDS; the result says which.
"""

import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

HOST = "127.0.0.1"


def connect(port, settings=None):
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    sock.sendall(conn.data_to_send())
    return sock, conn


def request_headers(path, method="GET", extra=()):
    return [(":method", method), (":path", path), (":scheme", "http"),
            (":authority", f"{HOST}"), *extra]


def pump(sock, conn, until, deadline):
    """Reads and handles events until ``until(events)`` says so, or the deadline."""
    result = {"goaway": None, "closed": False}
    while time.monotonic() < deadline:
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionError:
            result["closed"] = True
            break
        if not data:
            result["closed"] = True
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # The h2 package refuses frames after a GOAWAY (the server's closing PING): what
            # matters is the GOAWAY, read from the bytes themselves.
            result["goaway"] = goaway_in(data) or "unparsed"
            break
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                result["goaway"] = error_name(event.error_code)
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except ConnectionError:
                result["closed"] = True
                break
        if until(events) or result["goaway"] is not None:
            break
    return result


def get(port, path, headers=(), method="GET", body=b""):
    sock, conn = connect(port)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, request_headers(path, method, headers), end_stream=not body)
    sock.sendall(conn.data_to_send())
    response = {"status": None, "headers": {}, "body": b"", "reset": None}
    ended = []

    def done(events):
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                for name, value in event.headers:
                    name, value = name.decode(), value.decode()
                    if name == ":status":
                        response["status"] = int(value)
                    else:
                        response["headers"][name] = value
            elif isinstance(event, h2.events.DataReceived):
                response["body"] += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                response["reset"] = error_name(event.error_code)
                ended.append(True)
            elif isinstance(event, h2.events.StreamEnded):
                ended.append(True)
        return bool(ended)

    sent = 0
    while sent < len(body) and not ended:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window == 0:
            # Wait for the server: more window, or its answer (a 413 ends the stream).
            pump(sock, conn, lambda events: done(events) or True, time.monotonic() + 30)
            continue
        chunk = body[sent:sent + window]
        sent += len(chunk)
        conn.send_data(sid, chunk, end_stream=sent == len(body))
        sock.sendall(conn.data_to_send())
    result = pump(sock, conn, done, time.monotonic() + 30) if not ended else {}
    sock.close()
    body = response.pop("body")
    response["length"] = len(body)
    response["text"] = body[:4096].decode("latin-1")
    response["sent"] = sent
    response.update(result)
    return response


def streams(port, n, path):
    sock, conn = connect(port)
    ids = []
    for _ in range(n):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers(path), end_stream=True)
        ids.append(sid)
    sock.sendall(conn.data_to_send())
    statuses, ended = {}, set()

    def done(events):
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                statuses[event.stream_id] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended.add(event.stream_id)
        return len(ended) == n

    result = pump(sock, conn, done, time.monotonic() + 60)
    sock.close()
    result["statuses"] = sorted(statuses.values())
    result["ended"] = len(ended)
    return result


def raw_frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def error_name(code):
    try:
        return h2.errors.ErrorCodes(int(code)).name
    except ValueError:
        return int(code)


def goaway_in(data):
    """The error code of the first GOAWAY frame among ``data``'s whole frames, if any."""
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        kind = data[at + 3]
        if kind == 0x7 and at + 9 + 8 <= len(data):
            return error_name(int.from_bytes(data[at + 13:at + 17], "big"))
        at += 9 + length
    return None


def last_goaway(sock):
    """After a failed send: the GOAWAY among what the server managed to send, if any."""
    data = b""
    sock.settimeout(1)
    try:
        while True:
            more = sock.recv(1 << 20)
            if not more:
                break
            data += more
    except (socket.timeout, ConnectionError):
        pass
    return goaway_in(data)


def watch(sock, conn, deadline):
    """Non-blocking read of whatever the server sent: a GOAWAY or a close ends the flood."""
    sock.setblocking(False)
    try:
        data = sock.recv(1 << 20)
    except BlockingIOError:
        return None
    except ConnectionError:
        return {"goaway": None, "closed": True}
    finally:
        sock.setblocking(True)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
    if not data:
        return {"goaway": None, "closed": True}
    goaway = goaway_in(data)
    if goaway is not None:
        return {"goaway": goaway, "closed": False}
    return None


def flood(port, seconds, step):
    sock, conn = connect(port)
    deadline = time.monotonic() + seconds
    count = 0
    outcome = None
    while time.monotonic() < deadline and outcome is None:
        try:
            sock.sendall(step(conn, count))
        except (ConnectionError, socket.timeout):
            outcome = {"goaway": last_goaway(sock), "closed": True}
            break
        count += 1
        if count % 16 == 0:
            outcome = watch(sock, conn, deadline)
    if outcome is None:
        # Out of time: whatever came last decides.
        outcome = pump(sock, conn, lambda events: False, time.monotonic() + 2)
    sock.close()
    outcome["sent"] = count
    outcome["seconds"] = round(seconds - max(0.0, deadline - time.monotonic()), 3)
    return outcome


def rapid_reset(conn, i):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, request_headers("/hit"), end_stream=True)
    conn.reset_stream(sid)
    return conn.data_to_send()


def continuation_flood(port, seconds):
    sock, conn = connect(port)
    sid = conn.get_next_available_stream_id()
    encoder = hpack.Encoder()
    block = encoder.encode(request_headers("/hit"))
    # HEADERS without END_HEADERS, then CONTINUATION frames of literal fields, never ending.
    first = raw_frame(0x1, 0x0, sid, block)
    junk = hpack.Encoder().encode([("x-junk", "j" * 1000)] * 8)
    frames = [first] + [raw_frame(0x9, 0x0, sid, junk)] * 1000
    deadline = time.monotonic() + seconds
    count, outcome = 0, None
    for frame in frames_forever(frames):
        if time.monotonic() >= deadline:
            break
        try:
            sock.sendall(frame)
        except (ConnectionError, socket.timeout):
            outcome = {"goaway": None, "closed": True}
            break
        count += 1
        if count % 16 == 0:
            outcome = watch(sock, conn, deadline)
            if outcome:
                break
    if outcome is None:
        outcome = pump(sock, conn, lambda events: False, time.monotonic() + 2)
    sock.close()
    outcome["sent"] = count
    return outcome


def frames_forever(frames):
    yield frames[0]
    while True:
        yield frames[1]


def ping(conn, i):
    conn.ping(struct.pack(">Q", i))
    return conn.data_to_send()


def settings(conn, i):
    return raw_frame(0x4, 0x0, 0, struct.pack(">HI", 0x3, 100 + i % 2))


def big_headers(port, size, count):
    extra = [(f"x-big-{i}", "b" * size) for i in range(count)]
    return get(port, "/environ", extra)


def hpack_bomb(port, count):
    """One 4 KiB value in the dynamic table, then a block that refers to it COUNT times: a few
    bytes on the wire that decode to COUNT x 4 KiB."""
    sock, conn = connect(port)
    sid = conn.get_next_available_stream_id()
    encoder = hpack.Encoder()
    first = encoder.encode(request_headers("/environ") + [("x-bomb", "b" * 4000)])
    index = 62  # the entry just added sits first in the dynamic table
    refs = b""
    for _ in range(count):
        refs += hpack_index(index)
    sock.sendall(raw_frame(0x1, 0x5, sid, first + refs))
    result = {"status": None, "reset": None, "goaway": None, "closed": False}
    data, decoder = b"", hpack.Decoder()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and result["status"] is None and result["reset"] is None:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            more = sock.recv(65536)
        except (socket.timeout, ConnectionError):
            more = b""
        if not more:
            result["closed"] = True
            break
        data += more
        # Whole frames only; the server's own SETTINGS and the like are skipped.
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            length, kind = int.from_bytes(data[:3], "big"), data[3]
            stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
            payload, data = data[9:9 + length], data[9 + length:]
            if kind == 0x1 and stream == sid:
                fields = dict(decoder.decode(payload))
                result["status"] = int(fields[":status"])
            elif kind == 0x3 and stream == sid:
                result["reset"] = error_name(int.from_bytes(payload[:4], "big"))
            elif kind == 0x7:
                result["goaway"] = error_name(int.from_bytes(payload[4:8], "big"))
    sock.close()
    return result


def hpack_index(index):
    """An indexed header field representation (RFC 7541 6.1)."""
    if index < 127:
        return bytes([0x80 | index])
    out = bytearray([0xff])
    index -= 127
    while index >= 128:
        out.append((index % 128) | 0x80)
        index //= 128
    out.append(index)
    return bytes(out)


def zero_window(port, path):
    sock, conn = connect(port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, request_headers(path), end_stream=True)
    sock.sendall(conn.data_to_send())
    result = {"status": None}

    def got_head(events):
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                result["status"] = int(dict(event.headers)[b":status"])
                return True
        return False

    result.update(pump(sock, conn, got_head, time.monotonic() + 30))
    # Hold the connection, reading nothing, until told to stop (stdin closes).
    print(json.dumps(result), flush=True)
    sys.stdin.read()
    sock.close()
    return None


def idle(port):
    sock, conn = connect(port)
    start = time.monotonic()
    result = pump(sock, conn, lambda events: False, start + 60)
    result["after"] = round(time.monotonic() - start, 3)
    sock.close()
    return result


def server_settings(port):
    sock, conn = connect(port)
    announced = {}

    def got(events):
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                for code, setting in event.changed_settings.items():
                    announced[h2.settings.SettingCodes(code).name] = setting.new_value
                return True
        return False

    result = pump(sock, conn, got, time.monotonic() + 10)
    sock.close()
    result["settings"] = announced
    return result


def main(argv):
    port, scenario, args = int(argv[1]), argv[2], argv[3:]
    if scenario == "get":
        headers = [tuple(h.split("=", 1)) for h in args[1:]]
        result = get(port, args[0], headers)
    elif scenario == "post":
        result = get(port, args[0], method="POST", body=b"p" * int(args[1]))
    elif scenario == "streams":
        result = streams(port, int(args[0]), args[1])
    elif scenario == "big-headers":
        result = big_headers(port, int(args[0]), int(args[1]))
    elif scenario == "hpack-bomb":
        result = hpack_bomb(port, int(args[0]))
    elif scenario == "rapid-reset":
        result = flood(port, float(args[0]), rapid_reset)
    elif scenario == "continuation":
        result = continuation_flood(port, float(args[0]))
    elif scenario == "ping":
        result = flood(port, float(args[0]), ping)
    elif scenario == "settings":
        result = flood(port, float(args[0]), settings)
    elif scenario == "zero-window":
        result = zero_window(port, args[0])
    elif scenario == "idle":
        result = idle(port)
    elif scenario == "server-settings":
        result = server_settings(port)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
