#!/usr/bin/env python3
"""A gevent chat server: c10k's benchmark peer for the green-threads model.

Written the way gevent's own chat example (examples/webchat) is: the standard library
monkey-patched, a plain WSGI application served by gevent.pywsgi.WSGIServer with a
greenlet per connection, handlers written as ordinary blocking code, and a
gevent.event.Event per room that is set and cleared on every new message to wake the
greenlets waiting for it. It serves the routes of c10k's wire protocol
(docs/protocol.md) that the benchmark drives, in memory only:

  GET  /plaintext                      Hello, World! (text/plain)
  POST /a/message/new                  Tornado's chat demo post (form: body, optional next)
  POST /a/message/updates              its long-poll (form: cursor); `{}` after
                                       --longpoll-wait seconds without news
  POST /api/rooms/{room}/messages      JSON {"body", "from"} -> 201 the message
  GET  /api/rooms/{room}/messages      ?after=ID&wait=S, JSON long-poll
  GET  /api/rooms/{room}/events        Server-Sent Events (?after=ID or Last-Event-ID)

No XSRF checking (the example had none of its own; the load generator posts to the
native API, which needs none); the page itself (GET /) is not served. A greenlet waiting
for news does not notice its client leaving until it writes: a long-poll's answer or the
event stream's heartbeat.

    python3 gevent_chat.py --port 8888 [--processes N] [--longpoll-wait 30]

With --processes N > 1 the listening socket is shared by N forked processes, each with
its own rooms: use it for /plaintext only. Prints one line on standard output,
`gevent listening on http://127.0.0.1:PORT/`, once the socket listens.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import ctypes  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from urllib.parse import parse_qs  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

HEARTBEAT_SECONDS = 15
ROOM_NAME = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
MAX_BODY_CHARS = 4096
MAX_FROM_CHARS = 64
MAX_REQUEST_BODY = 1 << 20

options = argparse.Namespace(port=8888, processes=1, longpoll_wait=30.0, history=200)

# The rule of Tornado's tornado.escape.linkify with its defaults (Apache License 2.0),
# so that both Python peers send the same html for a message.
_URL_RE = re.compile(
    r"""\b((?:([\w-]+):(/{1,3})|www[.])(?:(?:(?:[^\s&()]|&amp;|&quot;)*(?:[^!"#$%&'()*+,.:;<=>?@\[\]^`{|}~\s]))|(?:\((?:[^\s&()]|&amp;|&quot;)*\)))+)"""  # noqa: E501
)


def linkify(text):
    def make_link(m):
        url, proto = m.group(1), m.group(2)
        if proto and proto not in ("http", "https"):
            return url
        href = url if proto else "http://" + url
        return '<a href="%s">%s</a>' % (href, url)

    return _URL_RE.sub(make_link, html.escape(text))


def json_bytes(value):
    # As Tornado's json_encode: `</` escaped so that JSON is safe inside <script>.
    return json.dumps(value).replace("</", "<\\/").encode("utf-8")


class ChatRoom:
    def __init__(self, name, cache_size):
        self.name = name
        self.cache = []  # (native message, the demo's message), oldest first
        self.cache_size = cache_size
        self.last_id = 0
        self.new_message_event = Event()

    def add(self, body, sender):
        native = {
            "id": self.last_id + 1,
            "room": self.name,
            "body": body,
            "from": sender,
            "time": int(time.time() * 1000),
        }
        html_fragment = '<div class="message" id="m%d">%s</div>\n' % (native["id"], linkify(body))
        demo = {"id": str(native["id"]), "body": body, "html": html_fragment}
        self.cache.append((native, demo))
        if len(self.cache) > self.cache_size:
            self.cache = self.cache[-self.cache_size:]
        self.last_id = native["id"]
        # Wake every greenlet waiting for news in this room.
        self.new_message_event.set()
        self.new_message_event.clear()
        return native, demo

    def get_messages_since(self, cursor):
        """Tornado's rule: the cached messages after the one with id `cursor`; the whole
        cache when the cursor is absent or not cached."""
        for index in range(len(self.cache) - 1, -1, -1):
            if self.cache[index][1]["id"] == cursor:
                return [demo for _, demo in self.cache[index + 1:]]
        return [demo for _, demo in self.cache]

    def read_after(self, after):
        """(native messages with id > after, reset); see MessageBuffer.read_after in
        tornado_chat.py."""
        if after is None:
            return [native for native, _ in self.cache], False
        oldest = self.cache[0][0]["id"] if self.cache else self.last_id + 1
        if after > self.last_id or after + 1 < oldest:
            return [native for native, _ in self.cache], True
        return [native for native, _ in self.cache[after + 1 - oldest:]], False

    def wait_until(self, deadline, read):
        """Calls read() until it returns something true or the deadline passes."""
        result = read()
        while not result:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.new_message_event.wait(remaining):
                break
            result = read()
        return result


rooms = {}


def get_room(name):
    room = rooms.get(name)
    if room is None:
        room = rooms[name] = ChatRoom(name, max(1, options.history))
    return room


class HTTPError(Exception):
    def __init__(self, status, message, json_error=True):
        super().__init__(message)
        self.status = status
        self.message = message
        self.json_error = json_error


def respond(start_response, status, body, content_type, headers=()):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))] + list(headers))
    return [body]


def respond_json(start_response, value, status="200 OK"):
    return respond(start_response, status, json_bytes(value), "application/json; charset=UTF-8")


def read_body(environ):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HTTPError("400 Bad Request", "bad Content-Length")
    if length > MAX_REQUEST_BODY:
        raise HTTPError("413 Payload Too Large", "body too large")
    return environ["wsgi.input"].read(length) if length else b""


def form(environ):
    return parse_qs(read_body(environ).decode("utf-8", "replace"), keep_blank_values=True)


def query(environ):
    return parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)


def room_from(name):
    if not ROOM_NAME.match(name):
        raise HTTPError("400 Bad Request", "bad room name")
    return get_room(name)


def after_from(value):
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise HTTPError("400 Bad Request", "bad after")
    return int(value)


# --- handlers: plain blocking code, one greenlet per connection -------------------------


def plaintext(environ, start_response):
    return respond(start_response, "200 OK", b"Hello, World!", "text/plain")


def message_new(environ, start_response):
    fields = form(environ)
    if "body" not in fields:
        raise HTTPError("400 Bad Request", "Missing argument body", json_error=False)
    next_url = fields.get("next", [""])[-1]
    if next_url and (not next_url.startswith("/") or next_url.startswith(("//", "/\\"))):
        raise HTTPError("400 Bad Request", "bad next", json_error=False)
    _, demo = get_room("main").add(fields["body"][-1].strip(), "")
    if next_url:
        start_response("302 Found", [("Location", next_url), ("Content-Length", "0")])
        return [b""]
    return respond_json(start_response, demo)


def message_updates(environ, start_response):
    room = get_room("main")
    cursor = form(environ).get("cursor", [None])[-1]
    deadline = time.monotonic() + options.longpoll_wait
    messages = room.wait_until(deadline, lambda: room.get_messages_since(cursor))
    return respond_json(start_response, {"messages": messages} if messages else {})


def room_messages_post(environ, start_response, name):
    room = room_from(name)
    content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPError("415 Unsupported Media Type", "Content-Type must be application/json")
    try:
        data = json.loads(read_body(environ))
    except ValueError:
        raise HTTPError("400 Bad Request", "body is not JSON")
    if not isinstance(data, dict):
        raise HTTPError("400 Bad Request", "body is not a JSON object")
    body, sender = data.get("body"), data.get("from", "")
    if not isinstance(body, str) or not body or len(body) > MAX_BODY_CHARS:
        raise HTTPError("400 Bad Request", "body must be a non-empty string of at most 4096 characters")
    if sender is None:
        sender = ""
    if not isinstance(sender, str) or len(sender) > MAX_FROM_CHARS:
        raise HTTPError("400 Bad Request", "from must be a string of at most 64 characters")
    native, _ = room.add(body, sender)
    return respond_json(start_response, native, "201 Created")


def room_messages_get(environ, start_response, name):
    room = room_from(name)
    args = query(environ)
    after = after_from(args.get("after", [None])[-1])
    try:
        wait = min(max(float(args.get("wait", ["0"])[-1]), 0.0), options.longpoll_wait)
    except ValueError:
        raise HTTPError("400 Bad Request", "bad wait")

    def read():
        messages, reset = room.read_after(after)
        return (messages, reset) if messages or reset else None

    result = room.wait_until(time.monotonic() + wait, read) if wait > 0 else read()
    messages, reset = result or ([], False)
    return respond_json(
        start_response, {"room": room.name, "messages": messages, "reset": reset, "last_id": room.last_id}
    )


def room_events(environ, start_response, name):
    room = room_from(name)
    after = after_from(environ.get("HTTP_LAST_EVENT_ID") or query(environ).get("after", [None])[-1])
    write = start_response(
        "200 OK",
        [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("Connection", "close")],
    )
    write(b"")  # the head goes out at once, before any event
    return event_stream(room, after)


def event_stream(room, after):
    messages, reset = room.read_after(after)
    if reset:
        yield b"event: reset\ndata: " + json_bytes({"room": room.name, "last_id": room.last_id}) + b"\n\n"
        after = room.last_id
    while True:
        if messages:
            yield b"".join(b"id: %d\nevent: message\ndata: %s\n\n" % (m["id"], json_bytes(m)) for m in messages)
            after = messages[-1]["id"]
        elif not room.new_message_event.wait(HEARTBEAT_SECONDS):
            yield b": heartbeat\n\n"
        messages, reset = room.read_after(after)
        if reset:
            # The cache moved past this subscriber while it was being written to.
            yield b"event: error\ndata: " + json_bytes({"error": "subscriber too slow: messages were dropped"}) + b"\n\n"
            return


ROUTES = [
    (re.compile(r"\A/plaintext\Z"), {"GET": plaintext}),
    (re.compile(r"\A/a/message/new\Z"), {"POST": message_new}),
    (re.compile(r"\A/a/message/updates\Z"), {"POST": message_updates}),
    (re.compile(r"\A/api/rooms/([^/]+)/messages\Z"), {"GET": room_messages_get, "POST": room_messages_post}),
    (re.compile(r"\A/api/rooms/([^/]+)/events\Z"), {"GET": room_events}),
]


def application(environ, start_response):
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    for pattern, methods in ROUTES:
        match = pattern.match(path)
        if match:
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                return respond(start_response, "405 Method Not Allowed", b"", "text/plain", [("Allow", allow)])
            try:
                return handler(environ, start_response, *match.groups())
            except HTTPError as e:
                if e.json_error:
                    return respond_json(start_response, {"error": e.message}, e.status)
                return respond(start_response, e.status, e.message.encode(), "text/plain")
    return respond(start_response, "404 Not Found", b"Not Found", "text/plain")


class ChatHandler(WSGIHandler):
    """Two adjustments to pywsgi's handler.

    TCP_NODELAY: pywsgi sends a response's head and body in two sends; with Nagle's
    algorithm on, the body waits for the client's delayed ACK of the head (40 ms on
    Linux), and a keep-alive connection manages about 25 requests a second. nginx, Tornado
    and hyper all turn Nagle off; so does this.

    Unframed event streams: pywsgi sends a response that has no Content-Length in chunked
    encoding. The protocol's event stream is sent as is and ended by closing the
    connection: when the application says `Connection: close` and gives no length, send
    the body unframed."""

    def handle(self):
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return super().handle()

    def finalize_headers(self):
        super().finalize_headers()
        if self.response_use_chunked and self.close_connection:
            self.response_use_chunked = False
            self.response_headers = [
                (k, v) for k, v in self.response_headers if k.lower() != b"transfer-encoding"
            ]


def die_with_parent():
    """A forked child stops when its parent does (Linux), so stopping the parent stops all."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main():
    parser = argparse.ArgumentParser(description="gevent chat server, c10k's benchmark peer.")
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes sharing the socket (0: one per core); rooms are per process")
    parser.add_argument("--longpoll-wait", type=float, default=30.0,
                        help="seconds a long-poll waits before answering empty")
    parser.add_argument("--history", type=int, default=200, help="messages kept in memory per room")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    parser.parse_args(namespace=options)
    processes = options.processes if options.processes > 0 else (os.cpu_count() or 1)
    server = WSGIServer(
        ("127.0.0.1", options.port),
        application,
        backlog=4096,
        log="default" if options.access_log else None,
        handler_class=ChatHandler,
    )
    server.init_socket()
    print("gevent listening on http://127.0.0.1:%d/" % server.server_port, flush=True)
    for _ in range(processes - 1):
        if gevent.fork() == 0:
            die_with_parent()
            break
    server.serve_forever()


if __name__ == "__main__":
    main()
