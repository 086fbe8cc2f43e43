#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target (fuzz/corpus/TARGET/seed-*): a few inputs of
the shape each target expects, so that libFuzzer starts from real requests and frames
rather than from nothing. The first byte of every input chooses how the rest is cut into
reads (src/lib.rs, `cut`): 0 in one piece, odd in pieces of 1-4 bytes, even of 1-64.
Run it again after changing it; the files it writes are committed."""
import json, os, struct

here = os.path.dirname(os.path.abspath(__file__))

def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

H = b"Host: fuzz\r\n"
requests = {
    "get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "get-http10": b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "post-length": b"POST /api/rooms/r/messages HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"body\": \"hi\"}\n",
    "post-chunked": b"POST /a/message/new HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n4;x=y\r\nbody\r\n3\r\n=hi\r\n0\r\nTrailer: t\r\n\r\n",
    "expect-continue": b"POST /api/rooms/r/messages HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    "pipelined": (b"GET /a HTTP/1.1\r\n" + H + b"\r\n") * 2 + b"GET /b HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    "leading-crlf": b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n",
    "bare-lf": b"GET / HTTP/1.1\n" + H.replace(b"\r\n", b"\n") + b"\n",
    "cl-and-te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\nx",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "upgrade": b"GET /api/rooms/r/ws HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x80\x00\x00\x00\x00",
    "long-target": b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "many-fields": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"\r\n",
}
for i, (name, data) in enumerate(sorted(requests.items())):
    write("request_decoder", name, bytes([i * 37 % 256]) + data)

bodies = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "ext-and-trailers": b"3;name=value;x\r\nabc\r\n0\r\nExpires: never\r\nX: y\r\n\r\n",
    "upper-hex": b"A\r\n0123456789\r\n0\r\n\r\n",
    "leading-zeros": b"0003\r\nabc\r\n000\r\n\r\n",
    "bad-size": b"zz\r\nabc\r\n0\r\n\r\n",
    "bare-lf-size": b"3\nabc\r\n0\r\n\r\n",
    "too-much-data": b"2\r\nabc\r\n0\r\n\r\n",
    "huge-size": b"ffffffffffffffffffff\r\n",
    "pipelined-after": b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
}
for i, (name, data) in enumerate(sorted(bodies.items())):
    write("chunked_body", name, bytes([i * 53 % 256]) + data)

def frame(opcode, payload, fin=True, rsv=0, mask=b"\x37\xfa\x21\x3d"):
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

post = json.dumps({"type": "post", "body": "hello", "from": "ann", "ref": 1}).encode()
frames = {
    "post": frame(1, post),
    "post-then-close": frame(1, post) + frame(8, b"\x03\xe8bye"),
    "fragmented-post": frame(1, post[:10], fin=False) + frame(9, b"ping") + frame(0, post[10:]),
    "ping-pong": frame(9, b"are you there") + frame(10, b"unsolicited"),
    "binary": frame(2, b"\x00\x01\x02"),
    "not-json": frame(1, b"this is not JSON"),
    "bad-utf8": frame(1, b"\xce\xba\xff"),
    "unmasked": frame(1, post, mask=None),
    "rsv1": frame(1, post, rsv=4),
    "close-bad-code": frame(8, b"\x03\xed"),
    "oversized-header": bytes([0x81, 0xFF]) + struct.pack(">Q", 1 << 40) + b"\x00" * 4,
    "two-posts-with-key": frame(1, json.dumps({"type": "post", "body": "x", "key": "k"}).encode()) * 2,
}
for i, (name, data) in enumerate(sorted(frames.items())):
    write("websocket_frames", name, bytes([i * 71 % 256]) + data)

posts = {
    "body": b'{"body": "hello"}',
    "body-and-from": b'{"body": "hello", "from": "ann"}',
    "unicode": '{"body": "κόσμε \\ud83d\\ude00 </script>", "from": null}'.encode(),
    "lone-surrogate": b'{"body": "\\ud800"}',
    "empty-body": b'{"body": "  "}',
    "number-body": b'{"body": 5}',
    "from-number": b'{"body": "x", "from": 1}',
    "duplicate-key": b'{"body": "a", "body": "b"}',
    "array": b'["hello", "ann"]',
    "nested": b'{"body": "x", "extra": [[[[{}]]]]}',
    "truncated": b'{"body": "x',
    "not-utf8": b'{"body": "\xff"}',
    "nul-in-body": b'{"body": "a\\u0000b", "from": "ann"}',
    "nul-in-from": b'{"body": "hi", "from": "\\u0000"}',
}
for name, data in sorted(posts.items()):
    write("message_json", name, data)
