"""A tiny notes JSON API.

    curl http://127.0.0.1:8070/notes
    curl -X POST http://127.0.0.1:8070/notes -d '{"text": "buy milk"}'

Notes live in memory, so each worker process has its own list and they vanish on restart.
"""

import json
import os
import threading

NOTES = []
LOCK = threading.Lock()
CAVEAT = "notes are kept in memory, per worker process; they vanish on restart"


def reply(start_response, status, obj, headers=()):
    body = json.dumps(obj, indent=2).encode("utf-8") + b"\n"
    start_response(status, [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        *headers,
    ])
    return [body]


def app(environ, start_response):
    if environ.get("PATH_INFO") != "/notes":
        return reply(start_response, "404 Not Found", {"error": "try /notes"})
    method = environ["REQUEST_METHOD"]
    if method == "GET":
        with LOCK:
            notes = list(NOTES)
        return reply(start_response, "200 OK",
                     {"notes": notes, "worker_pid": os.getpid(), "caveat": CAVEAT})
    if method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            text = json.loads(environ["wsgi.input"].read(length))["text"]
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return reply(start_response, "400 Bad Request",
                         {"error": 'send a JSON object like {"text": "..."}'})
        with LOCK:
            note = {"id": len(NOTES) + 1, "text": text}
            NOTES.append(note)
        return reply(start_response, "201 Created",
                     {"note": note, "worker_pid": os.getpid(), "caveat": CAVEAT})
    return reply(start_response, "405 Method Not Allowed", {"error": "use GET or POST"},
                 [("Allow", "GET, POST")])
