#!/usr/bin/env python3
"""A Tornado chat server: c10k's benchmark peer for the event-loop-and-callbacks model.

Written the way Tornado's own chat demo (demos/chat/chatdemo.py) is: one asyncio event
loop, a MessageBuffer per room whose tornado.locks.Condition is notified on every new
message, handlers that `await` it. It serves the routes of c10k's wire protocol
(docs/protocol.md) that the benchmark drives, in memory only:

  GET  /plaintext                      Hello, World! (text/plain)
  POST /a/message/new                  the demo's post (form: body, optional next)
  POST /a/message/updates              the demo's long-poll (form: cursor); `{}` after
                                       --longpoll-wait seconds without news
  POST /api/rooms/{room}/messages      JSON {"body", "from"} -> 201 the message
  GET  /api/rooms/{room}/messages      ?after=ID&wait=S, JSON long-poll
  GET  /api/rooms/{room}/events        Server-Sent Events (?after=ID or Last-Event-ID)

Departures from the demo, for benchmarking: XSRF checking is off unless --xsrf is given
(the demo turns it on; the load generator posts to the native API, which needs none);
message ids are per-room integers (the demo used uuid4 strings; the Tornado routes still
send them as strings); a long-poll answers `{}` after --longpoll-wait seconds (the demo
waited forever); the page itself (GET /) is not served.

    python3 tornado_chat.py --port 8888 [--processes N] [--longpoll-wait 30] [--xsrf]

With --processes N > 1 (tornado.process.fork_processes; 0 = one per core) every process
has its own rooms: use it for /plaintext only. Prints one line on standard output,
`tornado listening on http://127.0.0.1:PORT/`, once the socket listens.
"""

import argparse
import asyncio
import ctypes
import datetime
import email.utils
import json
import logging
import re
import signal
import sys
import time

import tornado.escape
import tornado.httpserver
import tornado.ioloop
import tornado.iostream
import tornado.locks
import tornado.log
import tornado.netutil
import tornado.process
import tornado.template
import tornado.web

# Command-line options (argparse rather than tornado.options, whose parser takes only
# `--port=P`; the benchmark runs `--port P`). Filled in by main().
options = argparse.Namespace(port=8888, processes=1, longpoll_wait=30.0, history=200, xsrf=False)

HEARTBEAT_SECONDS = 15
ROOM_NAME = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
MAX_BODY_CHARS = 4096
MAX_FROM_CHARS = 64

# The demo's templates/message.html, inline so that this peer is one file.
TEMPLATES = {
    "message.html": '<div class="message" id="m{{ message["id"] }}">{% module linkify(message["body"]) %}</div>\n',
}


class Message:
    """One stored message, in both shapes: the native API's and the demo's."""

    __slots__ = ("id", "native", "tornado")

    def __init__(self, native, html):
        self.id = native["id"]
        self.native = native
        self.tornado = {"id": str(native["id"]), "body": native["body"], "html": html}


class MessageBuffer:
    """The demo's MessageBuffer, one per room, with integer ids."""

    def __init__(self, room, cache_size):
        self.room = room
        # cond is notified whenever the message cache is updated
        self.cond = tornado.locks.Condition()
        self.cache = []
        self.cache_size = cache_size
        self.last_id = 0

    def get_messages_since(self, cursor):
        """The demo's rule: every cached message after the one whose id is `cursor`;
        when the cursor is absent or not cached, the whole cache."""
        results = []
        for msg in reversed(self.cache):
            if msg.tornado["id"] == cursor:
                break
            results.append(msg)
        results.reverse()
        return results

    def read_after(self, after):
        """The native rule: (messages with id > after, reset). `after` None: everything
        held. reset: the cache no longer reaches back to `after`, or it is beyond the
        newest id; the messages are then everything held."""
        if after is None:
            return list(self.cache), False
        oldest = self.cache[0].id if self.cache else self.last_id + 1
        if after > self.last_id or after + 1 < oldest:
            return list(self.cache), True
        return self.cache[after + 1 - oldest:], False

    def add_message(self, native, html):
        message = Message(native, html)
        self.cache.append(message)
        if len(self.cache) > self.cache_size:
            self.cache = self.cache[-self.cache_size:]
        self.last_id = message.id
        self.cond.notify_all()
        return message

    def new_message(self, handler, body, sender):
        """Stores a message posted through `handler` (which renders its html)."""
        native = {
            "id": self.last_id + 1,
            "room": self.room,
            "body": body,
            "from": sender,
            "time": int(time.time() * 1000),
        }
        html = tornado.escape.to_unicode(handler.render_string("message.html", message={"id": native["id"], "body": body}))
        return self.add_message(native, html)


rooms = {}


def room_buffer(name):
    buffer = rooms.get(name)
    if buffer is None:
        buffer = rooms[name] = MessageBuffer(name, max(1, options.history))
    return buffer


class PlaintextHandler(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write("Hello, World!")


class MessageNewHandler(tornado.web.RequestHandler):
    """Post a new message to the chat room (the demo's, in room `main`)."""

    def post(self):
        next_url = self.get_argument("next", None)
        if next_url and (not next_url.startswith("/") or next_url.startswith(("//", "/\\"))):
            raise tornado.web.HTTPError(400)
        message = room_buffer("main").new_message(self, self.get_argument("body"), "")
        if next_url:
            self.redirect(next_url)
        else:
            self.write(message.tornado)


class MessageUpdatesHandler(tornado.web.RequestHandler):
    """Long-polling request for new messages (the demo's, plus a timeout).

    Waits until new messages are available before returning anything; after
    --longpoll-wait seconds answers `{}`."""

    wait_future = None

    async def post(self):
        buffer = room_buffer("main")
        cursor = self.get_argument("cursor", None)
        deadline = tornado.ioloop.IOLoop.current().time() + options.longpoll_wait
        messages = buffer.get_messages_since(cursor)
        while not messages:
            # Save the Future returned here so we can cancel it in on_connection_close.
            self.wait_future = buffer.cond.wait(timeout=deadline)
            try:
                notified = await self.wait_future
            except asyncio.CancelledError:
                return
            if not notified:
                break
            messages = buffer.get_messages_since(cursor)
        if self.request.connection.stream.closed():
            return
        self.write(dict(messages=[m.tornado for m in messages]) if messages else {})

    def on_connection_close(self):
        if self.wait_future is not None:
            self.wait_future.cancel()


class ApiHandler(tornado.web.RequestHandler):
    """The native API: JSON errors, no XSRF (it requires a JSON content type instead)."""

    def check_xsrf_cookie(self):
        pass

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        if "exc_info" in kwargs:
            error = kwargs["exc_info"][1]
            if isinstance(error, tornado.web.HTTPError) and error.log_message:
                reason = error.log_message
        self.finish({"error": reason})

    def room(self, name):
        if not ROOM_NAME.match(name):
            raise tornado.web.HTTPError(400, "bad room name")
        return room_buffer(name)

    def after_argument(self, value):
        if value is None or value == "":
            return None
        if not value.isdigit():
            raise tornado.web.HTTPError(400, "bad after")
        return int(value)


class RoomMessagesHandler(ApiHandler):
    wait_future = None

    def post(self, name):
        buffer = self.room(name)
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise tornado.web.HTTPError(415, "Content-Type must be application/json")
        try:
            data = json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, "body is not JSON")
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, "body is not a JSON object")
        body, sender = data.get("body"), data.get("from", "")
        if not isinstance(body, str) or not body or len(body) > MAX_BODY_CHARS:
            raise tornado.web.HTTPError(400, "body must be a non-empty string of at most 4096 characters")
        if sender is None:
            sender = ""
        if not isinstance(sender, str) or len(sender) > MAX_FROM_CHARS:
            raise tornado.web.HTTPError(400, "from must be a string of at most 64 characters")
        message = buffer.new_message(self, body, sender)
        self.set_status(201)
        self.write(message.native)

    async def get(self, name):
        buffer = self.room(name)
        after = self.after_argument(self.get_argument("after", None))
        try:
            wait = min(max(float(self.get_argument("wait", "0")), 0.0), options.longpoll_wait)
        except ValueError:
            raise tornado.web.HTTPError(400, "bad wait")
        deadline = tornado.ioloop.IOLoop.current().time() + wait
        messages, reset = buffer.read_after(after)
        while not messages and not reset and wait > 0:
            self.wait_future = buffer.cond.wait(timeout=deadline)
            try:
                notified = await self.wait_future
            except asyncio.CancelledError:
                return
            if not notified:
                break
            messages, reset = buffer.read_after(after)
        if self.request.connection.stream.closed():
            return
        self.write({
            "room": buffer.room,
            "messages": [m.native for m in messages],
            "reset": reset,
            "last_id": buffer.last_id,
        })

    def on_connection_close(self):
        if self.wait_future is not None:
            self.wait_future.cancel()


def sse_message(message):
    return "id: %d\nevent: message\ndata: %s\n\n" % (message.id, tornado.escape.json_encode(message.native))


class RoomEventsHandler(ApiHandler):
    """Server-Sent Events. Tornado would send a streamed response in chunked encoding;
    the protocol sends the stream as is, ended by closing the connection, so the handler
    takes the stream over (RequestHandler.detach, as WebSocketHandler does) and writes
    the response itself."""

    async def get(self, name):
        buffer = self.room(name)
        after = self.after_argument(self.request.headers.get("Last-Event-ID") or self.get_argument("after", None))
        stream = self.detach()
        wait_future = None

        def on_close():
            if wait_future is not None:
                wait_future.cancel()

        stream.set_close_callback(on_close)
        # A pending read notices the client going away while we wait for news.
        stream.read_until_close().add_done_callback(lambda f: f.exception())
        date = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc), usegmt=True)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\nDate: %s\r\nServer: TornadoServer/%s\r\n\r\n" % (date, tornado.version)
        )
        io_loop = stream.io_loop
        try:
            await stream.write(head.encode())
            messages, reset = buffer.read_after(after)
            if reset:
                reset_data = tornado.escape.json_encode({"room": buffer.room, "last_id": buffer.last_id})
                await stream.write(("event: reset\ndata: %s\n\n" % reset_data).encode())
                after = buffer.last_id
            while True:
                if messages:
                    await stream.write("".join(sse_message(m) for m in messages).encode())
                    after = messages[-1].id
                else:
                    wait_future = buffer.cond.wait(timeout=io_loop.time() + HEARTBEAT_SECONDS)
                    notified = await wait_future
                    wait_future = None
                    if not notified:
                        await stream.write(b": heartbeat\n\n")
                messages, reset = buffer.read_after(after)
                if reset:
                    # The cache moved past this subscriber while it was being written to.
                    error = tornado.escape.json_encode({"error": "subscriber too slow: messages were dropped"})
                    await stream.write(("event: error\ndata: %s\n\n" % error).encode())
                    break
        except (tornado.iostream.StreamClosedError, asyncio.CancelledError):
            pass
        finally:
            stream.close()


def make_app():
    return tornado.web.Application(
        [
            (r"/plaintext", PlaintextHandler),
            (r"/a/message/new", MessageNewHandler),
            (r"/a/message/updates", MessageUpdatesHandler),
            (r"/api/rooms/([^/]+)/messages", RoomMessagesHandler),
            (r"/api/rooms/([^/]+)/events", RoomEventsHandler),
        ],
        template_loader=tornado.template.DictLoader(TEMPLATES),
        xsrf_cookies=options.xsrf,
        compress_response=False,
    )


def die_with_parent():
    """A forked child stops when its parent does (Linux), so stopping the parent stops all."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def serve(sockets, announce):
    server = tornado.httpserver.HTTPServer(make_app(), idle_connection_timeout=75)
    server.add_sockets(sockets)
    if announce:
        print("tornado listening on http://127.0.0.1:%d/" % sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def main():
    parser = argparse.ArgumentParser(description="Tornado chat server, c10k's benchmark peer.")
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes to fork (0: one per core); rooms are per process")
    parser.add_argument("--longpoll-wait", type=float, default=30.0,
                        help="seconds a long-poll waits before answering empty")
    parser.add_argument("--history", type=int, default=200, help="messages kept in memory per room")
    parser.add_argument("--xsrf", action="store_true", help="check XSRF tokens on the Tornado routes, as the demo does")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    parser.parse_args(namespace=options)
    tornado.log.enable_pretty_logging()
    logging.getLogger().setLevel(logging.WARNING)
    if options.access_log:
        tornado.log.access_log.setLevel(logging.INFO)
    sockets = tornado.netutil.bind_sockets(options.port, "127.0.0.1", backlog=4096)
    forking = options.processes != 1
    if forking:
        print("tornado listening on http://127.0.0.1:%d/" % sockets[0].getsockname()[1], flush=True)
        tornado.process.fork_processes(options.processes)
        die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve(sockets, announce=not forking))


if __name__ == "__main__":
    main()
