//! The HTTP/1.1 codec, byte for byte (after h11's tests): what each request decodes to,
//! which status each broken or oversized request earns (docs/protocol.md "General HTTP
//! behaviour"), that the answer does not depend on how the bytes were split, and what
//! responses encode to.

use std::time::{Duration, SystemTime};

use c10k_core::http::{
    http_date, Encoding, Event, Headers, Method, ProtocolError, Request, RequestDecoder, Response, StatusCode,
};
use c10k_core::limits::Limits;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One thing the decoder said.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Req(Request),
    Continue,
    Fail(u16),
}

fn req(
    method: Method,
    target: &str,
    minor: u8,
    fields: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Request {
    let mut headers = Headers::new();
    for (name, value) in fields {
        headers.push(*name, value.as_bytes());
    }
    Request {
        method,
        target: target.to_string(),
        version_minor: minor,
        headers,
        body: body.to_vec(),
        keep_alive,
        peer: None,
    }
}

/// Calls `next_event` until it needs data or fails, recording what it said.
fn drain(dec: &mut RequestDecoder, outs: &mut Vec<Out>) -> bool {
    for _ in 0..1000 {
        match dec.next_event() {
            Ok(Event::Request(r)) => outs.push(Out::Req(r)),
            Ok(Event::Continue) => outs.push(Out::Continue),
            Ok(Event::NeedData) => return true,
            Err(e) => {
                outs.push(Out::Fail(e.status.0));
                return false;
            }
        }
    }
    panic!("the decoder never asked for more data: {outs:?}");
}

/// Feeds `input` in pieces ending at each of `cuts` (then the rest), draining after each.
fn decode_split(input: &[u8], cuts: impl IntoIterator<Item = usize>, limits: &Limits) -> Vec<Out> {
    let mut dec = RequestDecoder::new(limits);
    let mut outs = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        dec.receive(&input[from..cut]);
        from = cut;
        if !drain(&mut dec, &mut outs) {
            break;
        }
    }
    outs
}

fn decode(input: &[u8]) -> Vec<Out> {
    decode_split(input, [], &Limits::default())
}

/// What does not depend on the split: `Continue` is given only while a body is missing.
fn without_continue(outs: Vec<Out>) -> Vec<Out> {
    outs.into_iter().filter(|o| *o != Out::Continue).collect()
}

fn fields(n: usize) -> String {
    (0..n).map(|i| format!("X-F{i}: v\r\n")).collect()
}

// ---------------------------------------------------------------------------------------
// The table: bytes in, events out
// ---------------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Vec<Out>,
}

fn case(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Vec<Out>) -> Case {
    Case { name, bytes: bytes.into(), expect }
}

fn cases() -> Vec<Case> {
    use Method::*;
    use Out::*;
    let host = [("Host", "x")];
    let long_target = format!("/{}", "a".repeat(8191)); // 8192 bytes: the limit
    let longer_target = format!("/{}", "a".repeat(8192)); // 8193 bytes
    vec![
        // --- Requests that decode -------------------------------------------------------
        case("simple GET", "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", vec![Req(req(Get, "/a?b=1", 1, &host, b"", true))]),
        case(
            "POST with Content-Length",
            "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            vec![Req(req(Post, "/m", 1, &[("Host", "x"), ("Content-Length", "5")], b"hello", true))],
        ),
        case(
            "chunked with extensions and trailers, trailers dropped",
            "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;name=val\r\nhello\r\n\
             6 ; a ; b = \"q \\\" s\"\r\n world\r\n\
             0;last\r\nExpires: never\r\nX-T: 1\r\n\r\n",
            vec![Req(req(Post, "/c", 1, &[("Host", "x"), ("Transfer-Encoding", "chunked")], b"hello world", true))],
        ),
        case(
            "chunked: hex sizes either case, leading zeros, no trailers",
            "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\na\r\n0123456789\r\n00B\r\nabcdefghijk\r\n000\r\n\r\n",
            vec![Req(req(Post, "/c", 1, &[("Host", "x"), ("Transfer-Encoding", "Chunked")], b"0123456789abcdefghijk", true))],
        ),
        case(
            "pipelined requests come out one at a time, in order",
            "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok\
             GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![
                Req(req(Get, "/1", 1, &host, b"", true)),
                Req(req(Post, "/2", 1, &[("Host", "x"), ("Content-Length", "2")], b"ok", true)),
                Req(req(Get, "/3", 1, &host, b"", true)),
            ],
        ),
        case(
            "RFC 9112 2.2: bare LF ends head lines",
            "GET / HTTP/1.1\nHost: x\n\n",
            vec![Req(req(Get, "/", 1, &host, b"", true))],
        ),
        case(
            "RFC 9112 2.2: empty lines before a request line are ignored",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![Req(req(Get, "/", 1, &host, b"", true)), Req(req(Get, "/2", 1, &host, b"", true))],
        ),
        case(
            "methods the router does not know are kept, not refused",
            "PATCH /p HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![Req(req(Other("PATCH".into()), "/p", 1, &host, b"", true))],
        ),
        case(
            "a field of just under 8 KiB and a head of just under 32 KiB are accepted",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n{}\r\n",
                "b".repeat(8 * 1024 - 7),
                (0..3).map(|i| format!("X-{i}: {}\r\n", "c".repeat(7 * 1024))).collect::<String>()
            ),
            vec![Req(req(
                Get,
                "/",
                1,
                &[
                    ("Host", "x"),
                    ("X-Big", &"b".repeat(8 * 1024 - 7)),
                    ("X-0", &"c".repeat(7 * 1024)),
                    ("X-1", &"c".repeat(7 * 1024)),
                    ("X-2", &"c".repeat(7 * 1024)),
                ],
                b"",
                true,
            ))],
        ),
        case(
            "HTTP/1.0 may leave Host out (RFC 9112 3.2)",
            "GET / HTTP/1.0\r\n\r\n",
            vec![Req(req(Get, "/", 0, &[], b"", false))],
        ),
        case(
            "Host with a port, an IPv6 literal, or empty is valid",
            "GET /1 HTTP/1.1\r\nHost: example.org:8080\r\n\r\nGET /2 HTTP/1.1\r\nHost: [::1]:8888\r\n\r\nGET /3 HTTP/1.1\r\nHost:\r\n\r\n",
            vec![
                Req(req(Get, "/1", 1, &[("Host", "example.org:8080")], b"", true)),
                Req(req(Get, "/2", 1, &[("Host", "[::1]:8888")], b"", true)),
                Req(req(Get, "/3", 1, &[("Host", "")], b"", true)),
            ],
        ),
        case(
            "a target of exactly 8 KiB is accepted",
            format!("GET {long_target} HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Req(req(Get, &long_target, 1, &host, b"", true))],
        ),
        // --- Keep-alive (RFC 9112 9.3) ----------------------------------------------------
        case(
            "HTTP/1.1 persists by default",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![Req(req(Get, "/", 1, &host, b"", true))],
        ),
        case(
            "HTTP/1.1 with Connection: close does not persist, and nothing after it is read",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, Close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![Req(req(Get, "/", 1, &[("Host", "x"), ("Connection", "Keep-Alive, Close")], b"", false))],
        ),
        case(
            "HTTP/1.0 closes by default",
            "GET / HTTP/1.0\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n",
            vec![Req(req(Get, "/", 0, &[], b"", false))],
        ),
        case(
            "HTTP/1.0 with Connection: keep-alive persists",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
            vec![
                Req(req(Get, "/", 0, &[("Connection", "keep-alive")], b"", true)),
                Req(req(Get, "/2", 0, &[], b"", false)),
            ],
        ),
        // --- Expect: 100-continue (RFC 9110 10.1.1) ---------------------------------------
        case(
            "Expect: 100-continue with the body missing gives Continue",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n",
            vec![Continue],
        ),
        case(
            "Expect: 100-continue with the body already there gives the request",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
            vec![Req(req(Post, "/", 1, &[("Host", "x"), ("Expect", "100-continue"), ("Content-Length", "2")], b"hi", true))],
        ),
        case(
            "Expect: 100-continue without a body gives the request",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            vec![Req(req(Get, "/", 1, &[("Host", "x"), ("Expect", "100-continue")], b"", true))],
        ),
        case(
            "Expect: 100-continue is ignored in HTTP/1.0",
            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            vec![],
        ),
        // --- 400 Bad Request --------------------------------------------------------------
        case("400: not a request line", "HELLO\r\n\r\n", vec![Fail(400)]),
        case("400: HTTP/1.1 without Host (RFC 9112 3.2)", "GET / HTTP/1.1\r\nX: y\r\n\r\n", vec![Fail(400)]),
        case("400: two Host fields", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", vec![Fail(400)]),
        case("400: two Host fields in HTTP/1.0 too", "GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n", vec![Fail(400)]),
        case("400: a Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", vec![Fail(400)]),
        case("400: a Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", vec![Fail(400)]),
        case("400: a Host with a bad port", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", vec![Fail(400)]),
        case("400: a Host with an unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", vec![Fail(400)]),
        case(
            "400: duplicate identical Content-Length fields (stricter than RFC 9112 6.3 item 5)",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            vec![Fail(400)],
        ),
        case(
            "400: a Content-Length list of equal values",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            vec![Fail(400)],
        ),
        case("400: Content-Length in hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", vec![Fail(400)]),
        case("400: Content-Length negative", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", vec![Fail(400)]),
        case("400: two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", vec![Fail(400)]),
        case("400: a version that is not HTTP", "GET / HTTPS/1.1\r\n\r\n", vec![Fail(400)]),
        case("400: white space before the colon (RFC 9112 5.1)", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", vec![Fail(400)]),
        case("400: obsolete line folding (RFC 9112 5.2)", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", vec![Fail(400)]),
        case("400: Content-Length not digits", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", vec![Fail(400)]),
        case("400: Content-Length with a sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", vec![Fail(400)]),
        case("400: Content-Length empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", vec![Fail(400)]),
        case("400: Content-Length list that disagrees", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab", vec![Fail(400)]),
        case(
            "400: Content-Length fields that disagree",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            vec![Fail(400)],
        ),
        case(
            "400: Transfer-Encoding and Content-Length together (RFC 9112 6.3 item 3)",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1)",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: chunked applied twice",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: chunk size not hexadecimal",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: chunk size line ended by a bare LF",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: chunk extension without a name",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: chunk data longer than its size",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd1\r\ne\r\n0\r\n\r\n",
            vec![Fail(400)],
        ),
        case(
            "400: malformed trailer field",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
            vec![Fail(400)],
        ),
        // --- 413, 414, 431 --------------------------------------------------------------------
        case(
            "413: Content-Length over 1 MiB, refused from the head alone",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n",
            vec![Fail(413)],
        ),
        case(
            "413: Content-Length too large for any integer",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            vec![Fail(413)],
        ),
        case(
            "413: a chunk over 1 MiB, refused from its size line",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n",
            vec![Fail(413)],
        ),
        case(
            "414: a target over 8 KiB",
            format!("GET {longer_target} HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Fail(414)],
        ),
        case(
            "431: a head over 32 KiB, each field under 8 KiB",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", (0..5).map(|i| format!("X-{i}: {}\r\n", "b".repeat(7 * 1024))).collect::<String>()),
            vec![Fail(431)],
        ),
        case(
            "431: one field over 8 KiB",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(8 * 1024)),
            vec![Fail(431)],
        ),
        case("431: 101 header fields", format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(100)), vec![Fail(431)]),
        // A request line that ends only past the 32 KiB head limit is judged on the first
        // 32 KiB, where it has not ended, whatever the reads (the fuzzer found that one read
        // said 414 and many said 431): its target there decides.
        case(
            "431: a long method, the line ending beyond the head limit, the target short within it",
            format!("{} /{} HTTP/1.1\r\nHost: x\r\n\r\n", "M".repeat(32 * 1024 - 100), "a".repeat(8192)),
            vec![Fail(431)],
        ),
        case(
            "414: a line ending beyond the head limit whose target passes 8 KiB within it",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40 * 1024)),
            vec![Fail(414)],
        ),
        // --- 501, 505 ---------------------------------------------------------------------
        case(
            "501: a transfer coding other than chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            vec![Fail(501)],
        ),
        case("505: HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", vec![Fail(505)]),
        case("505: the HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", vec![Fail(505)]),
        case("505: HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", vec![Fail(505)]),
        // --- Errors stop the decoding -------------------------------------------------------
        case(
            "a request after a broken one is never decoded",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![Fail(400)],
        ),
    ]
}

#[test]
fn every_case_decodes_as_the_table_says() {
    for c in cases() {
        assert_eq!(decode(&c.bytes), c.expect, "case: {}", c.name);
    }
}

#[test]
fn every_case_decodes_the_same_fed_one_byte_at_a_time() {
    for c in cases() {
        let outs = decode_split(&c.bytes, 1..c.bytes.len(), &Limits::default());
        assert_eq!(without_continue(outs), without_continue(c.expect.clone()), "case: {}", c.name);
    }
}

#[test]
fn every_case_decodes_the_same_split_in_two_at_every_offset() {
    for c in cases().into_iter().filter(|c| c.bytes.len() <= 2048) {
        for cut in 0..=c.bytes.len() {
            let outs = decode_split(&c.bytes, [cut], &Limits::default());
            assert_eq!(
                without_continue(outs),
                without_continue(c.expect.clone()),
                "case: {} cut at {cut}",
                c.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Limits: the status, and how early it comes
// ---------------------------------------------------------------------------------------

#[test]
fn a_body_of_exactly_the_limit_is_accepted_by_length_and_by_chunks() {
    let body = vec![b'z'; 1024 * 1024];
    let mut by_length = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    by_length.extend_from_slice(&body);
    let mut chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n80000\r\n".to_vec();
    chunked.extend_from_slice(&body[..0x80000]);
    chunked.extend_from_slice(b"\r\n80000\r\n");
    chunked.extend_from_slice(&body[0x80000..]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    for input in [by_length, chunked] {
        match decode(&input).as_slice() {
            [Out::Req(r)] => assert_eq!(r.body, body),
            other => panic!("expected one request, got {} events", other.len()),
        }
    }
}

#[test]
fn a_content_length_over_the_limit_fails_before_the_body_is_sent() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n");
    assert_eq!(dec.next_event().unwrap_err().status, StatusCode::CONTENT_TOO_LARGE);
}

#[test]
fn a_chunked_total_over_the_limit_fails_at_the_size_line_of_the_chunk_that_crosses_it() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n80000\r\n");
    dec.receive(&vec![b'a'; 0x80000]);
    dec.receive(b"\r\n");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    // 0x80000 + 0x80001 = 1 MiB + 1: refused before any of the second chunk's data.
    dec.receive(b"80001\r\n");
    assert_eq!(dec.next_event().unwrap_err().status, StatusCode::CONTENT_TOO_LARGE);
}

#[test]
fn a_head_that_never_ends_fails_once_it_passes_32_kib() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let line = b"X-Filler: 0123456789012345678901234567890123456789\r\n";
    let mut sent = "GET / HTTP/1.1\r\nHost: x\r\n".len();
    while sent + line.len() <= 32 * 1024 {
        dec.receive(line);
        sent += line.len();
        assert_eq!(dec.next_event(), Ok(Event::NeedData), "at {sent} bytes");
    }
    dec.receive(line);
    assert_eq!(dec.next_event().unwrap_err().status, StatusCode::HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn a_long_target_fails_as_soon_as_its_request_line_ends() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(format!("GET /{} HTTP/1.1\r\nHost: x\r\n", "a".repeat(8192)).as_bytes());
    assert_eq!(dec.next_event().unwrap_err().status, StatusCode::URI_TOO_LONG);
}

#[test]
fn a_request_line_that_never_ends_is_414_not_431() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"GET /");
    dec.receive(&vec![b'a'; 32 * 1024]);
    assert_eq!(dec.next_event().unwrap_err().status, StatusCode::URI_TOO_LONG);
}

#[test]
fn exactly_100_header_fields_are_accepted() {
    let outs = decode(format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(99)).as_bytes());
    assert!(matches!(outs.as_slice(), [Out::Req(r)] if r.headers.len() == 100), "{outs:?}");
}

#[test]
fn configured_limits_are_the_ones_enforced() {
    let limits = Limits { max_headers: 200, max_body_bytes: 4, max_target_bytes: 3, ..Limits::default() };
    let run = |input: &str| decode_split(input.as_bytes(), [], &limits);
    // More header slots than fit on the stack.
    assert!(matches!(run(&format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(199))).as_slice(), [Out::Req(_)]));
    assert_eq!(run(&format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", fields(200))), [Out::Fail(431)]);
    assert_eq!(run("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"), [Out::Fail(413)]);
    assert_eq!(
        run("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\n"),
        [Out::Fail(413)]
    );
    assert_eq!(run("GET /abc HTTP/1.1\r\nHost: x\r\n\r\n"), [Out::Fail(414)]);
    assert!(matches!(run("GET /ab HTTP/1.1\r\nHost: x\r\n\r\n").as_slice(), [Out::Req(_)]));
}

#[test]
fn too_many_trailer_fields_are_431() {
    let limits = Limits { max_headers: 2, ..Limits::default() };
    let input = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(decode_split(input.as_bytes(), [], &limits), [Out::Fail(431)]);
}

// ---------------------------------------------------------------------------------------
// Expect, idleness, end of file, upgrade
// ---------------------------------------------------------------------------------------

#[test]
fn continue_is_given_once_then_the_request_when_the_body_arrives() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(dec.next_event(), Ok(Event::Continue));
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    dec.receive(b"ab");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    dec.receive(b"cd");
    match dec.next_event() {
        Ok(Event::Request(r)) => assert_eq!(r.body, b"abcd"),
        other => panic!("expected the request, got {other:?}"),
    }
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
}

#[test]
fn idle_means_no_byte_of_a_next_request_is_buffered() {
    let mut dec = RequestDecoder::new(&Limits::default());
    assert!(dec.is_idle(), "a new connection is idle");
    dec.receive(b"GE");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    assert!(!dec.is_idle(), "part of a request line is buffered");
    dec.receive(b"T / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    assert!(!dec.is_idle(), "a body is missing");
    dec.receive(b"okGET /next");
    assert!(matches!(dec.next_event(), Ok(Event::Request(_))));
    assert!(!dec.is_idle(), "the next request has begun");
    dec.receive(b" HTTP/1.1\r\nHost: x\r\n\r\n\r\n");
    assert!(matches!(dec.next_event(), Ok(Event::Request(_))));
    assert!(dec.is_idle(), "a stray CRLF between requests is not a request");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    assert!(dec.is_idle());
}

#[test]
fn end_of_file_between_requests_is_fine_and_inside_one_is_400() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(dec.next_event(), Ok(Event::Request(_))));
    assert_eq!(dec.receive_eof(), Ok(()));

    for partial in [&b"GET / HTTP/1.1\r\nHost"[..], b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nab"] {
        let mut dec = RequestDecoder::new(&Limits::default());
        dec.receive(partial);
        assert_eq!(dec.next_event(), Ok(Event::NeedData));
        let err = dec.receive_eof().unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.reason, "connection closed in the middle of a request");
    }
}

#[test]
fn errors_are_sticky() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"GET / HTTP/9.9\r\n\r\n");
    let first = dec.next_event().unwrap_err();
    assert_eq!(first.status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    dec.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(dec.next_event(), Err(first));
    assert!(dec.buffered().is_empty(), "bytes after an error are not kept");
}

#[test]
fn after_a_closing_request_nothing_is_decoded_or_kept() {
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(dec.next_event(), Ok(Event::Request(r)) if !r.keep_alive));
    dec.receive(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(dec.next_event(), Ok(Event::NeedData));
    assert!(dec.buffered().is_empty());
    assert!(dec.is_idle());
    assert_eq!(dec.receive_eof(), Ok(()));
}

#[test]
fn take_buffered_hands_over_the_bytes_after_an_upgrade_request() {
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    let mut input = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    input.extend_from_slice(frame);
    let mut dec = RequestDecoder::new(&Limits::default());
    dec.receive(&input);
    match dec.next_event() {
        Ok(Event::Request(r)) => assert!(r.is_websocket_upgrade()),
        other => panic!("expected the upgrade request, got {other:?}"),
    }
    assert_eq!(dec.buffered(), frame);
    assert_eq!(dec.take_buffered(), frame);
    assert!(dec.buffered().is_empty());
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn how(keep_alive: bool, head_only: bool, http10: bool) -> Encoding<'static> {
    Encoding { keep_alive, head_only, http10, date: DATE }
}

#[test]
fn responses_encode_byte_for_byte() {
    let hello = || Response::text(StatusCode::OK, "hello");
    let cases: Vec<(&str, Response, Encoding, &str, bool)> = vec![
        (
            "HTTP/1.1 keep-alive",
            hello(),
            how(true, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\n\r\nhello",
            true,
        ),
        (
            "HEAD: the GET length, no body",
            hello(),
            how(true, true, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\n\r\n",
            true,
        ),
        (
            "the request asked to close",
            hello(),
            how(false, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\nhello",
            false,
        ),
        (
            "the response closes a keep-alive connection",
            Response::new(StatusCode::NOT_FOUND).close(),
            how(true, false, false),
            "HTTP/1.1 404 Not Found\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.0 keep-alive is announced",
            hello(),
            how(true, false, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            true,
        ),
        (
            "HTTP/1.0 without keep-alive closes",
            hello(),
            how(false, true, true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "405 with Allow",
            Response::new(StatusCode::METHOD_NOT_ALLOWED).header("Allow", "GET, HEAD"),
            how(true, false, false),
            "HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 0\r\n\r\n",
            true,
        ),
        (
            "204 has no Content-Length (RFC 9110 8.6)",
            Response::new(StatusCode::NO_CONTENT),
            how(true, false, false),
            "HTTP/1.1 204 No Content\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
            true,
        ),
        (
            "framing fields set by a route are replaced by the codec's",
            Response::text(StatusCode::OK, "abc").header("content-length", "99").header("Connection", "close"),
            how(true, false, false),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Length: 3\r\n\r\nabc",
            true,
        ),
        (
            "a protocol error's response",
            ProtocolError::new(StatusCode::CONTENT_TOO_LARGE, "too big").response(),
            how(true, false, false),
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
            false,
        ),
    ];
    for (name, response, how, bytes, stays_open) in cases {
        let mut out = b"previous|".to_vec();
        let open = response.encode(&how, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), format!("previous|{bytes}"), "case: {name}");
        assert_eq!(open, stays_open, "case: {name}");
    }
}

#[test]
fn encode_head_writes_no_content_length_and_no_connection_of_its_own() {
    let response = Response::new(StatusCode::SWITCHING_PROTOCOLS)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let mut out = Vec::new();
    response.encode_head(DATE, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
}

#[test]
fn encoding_for_a_request_follows_its_method_version_and_keep_alive() {
    let outs = decode(
        b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let [Out::Req(head10), Out::Req(get11)] = outs.as_slice() else { panic!("{outs:?}") };
    assert_eq!(Encoding::for_request(head10, DATE), how(true, true, true));
    assert_eq!(Encoding::for_request(get11, DATE), how(false, false, false));
}

#[test]
fn http_date_is_the_imf_fixdate() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), DATE);
}

#[test]
fn releasing_the_idle_buffer_keeps_a_started_request_and_decodes_the_same() {
    let mut decoder = RequestDecoder::new(&Limits::default());
    decoder.receive(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HT");
    assert!(matches!(decoder.next_event(), Ok(Event::Request(r)) if r.path() == "/a"));
    // Half of /b is buffered: releasing must keep it.
    decoder.release_idle_buffer();
    assert_eq!(decoder.buffered(), b"GET /b HT");
    assert!(matches!(decoder.next_event(), Ok(Event::NeedData)));
    decoder.receive(b"TP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(decoder.next_event(), Ok(Event::Request(r)) if r.path() == "/b"));
    // Nothing buffered now: released, and the next request decodes from a fresh buffer.
    decoder.release_idle_buffer();
    assert!(decoder.buffered().is_empty() && decoder.is_idle());
    decoder.receive(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(decoder.next_event(), Ok(Event::Request(r)) if r.path() == "/c"));
}
