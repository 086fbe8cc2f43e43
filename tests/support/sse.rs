//! A Server-Sent Events reader: opens `GET .../events`, then parses the stream into
//! `id:` / `event:` / `data:` blocks, skipping comment-only blocks (heartbeats). The
//! stream may be chunked or delimited by the connection's close: both are read.
//!
//! [`whatwg_events`] parses a whole transcript of a stream as a browser's `EventSource`
//! does, to the letter of the standard (a lone CR ends a line too), for tests whose point
//! is what a browser would see.

use serde_json::Value;

use super::http::{find, Conn, Request, Response};

/// One event of the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    /// The `data:` parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("the data of this event is not JSON ({e}): {self:?}"))
    }
}

/// An open event stream.
pub struct EventStream {
    conn: Conn,
    /// The response head (status 200, `text/event-stream`).
    pub head: Response,
    chunked: bool,
    /// Received bytes not yet de-chunked (chunked streams only).
    raw: Vec<u8>,
    /// Stream bytes not yet parsed into events.
    text: Vec<u8>,
    /// Every event read so far, for failure messages.
    seen: Vec<Event>,
    /// Every byte of the stream so far (de-chunked), parsed or not: see [`whatwg_events`].
    transcript: Vec<u8>,
}

impl EventStream {
    /// `GET path` with an optional `Last-Event-ID`; asserts a 200 event stream.
    pub fn open(port: u16, path: &str, last_event_id: Option<&str>) -> EventStream {
        EventStream::open_at(Conn::open(port), path, last_event_id)
    }

    /// The same, on `conn` (a connection to any address, e.g. [`Conn::open_to`]).
    pub fn open_at(mut conn: Conn, path: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = Request::get(path).header("Accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        conn.send_request(&request);
        let head = conn.read_head();
        assert_eq!(
            head.status, 200,
            "GET {path} must open an event stream, got:\n{head}"
        );
        assert!(
            head.is_event_stream(),
            "GET {path} must answer Content-Type: text/event-stream, got:\n{head}"
        );
        let chunked = head
            .header("Transfer-Encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        EventStream {
            conn,
            head,
            chunked,
            raw: Vec::new(),
            text: Vec::new(),
            seen: Vec::new(),
            transcript: Vec::new(),
        }
    }

    /// Every byte of the stream received so far, de-chunked (what an `EventSource` reads).
    pub fn transcript(&self) -> &[u8] {
        &self.transcript
    }

    /// The next event with a `data:` or `event:` field; comment-only blocks are skipped.
    pub fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.parse_block() {
                self.seen.push(event.clone());
                return event;
            }
            self.receive();
        }
    }

    /// The next event, which must be `event: message` with an `id:` equal to the id in
    /// its data; returns the message (the data's JSON).
    pub fn next_message(&mut self) -> Value {
        let event = self.next_event();
        assert_eq!(
            event.event.as_deref(),
            Some("message"),
            "expected a message event, got {event:?}\nevents so far: {:#?}",
            self.seen
        );
        let message = event.json();
        let id = message["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a message without a numeric id: {event:?}"));
        assert_eq!(
            event.id.as_deref(),
            Some(id.to_string().as_str()),
            "the event's id: must be the message's id: {event:?}"
        );
        message
    }

    /// The next `n` messages' ids.
    pub fn next_ids(&mut self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| self.next_message()["id"].as_u64().unwrap())
            .collect()
    }

    /// Reads the stream to its end (the server closes it) and returns the events not read
    /// yet, the last one whole or not at all.
    pub fn rest_until_closed(mut self) -> Vec<Event> {
        let bytes = self.conn.read_to_close("the end of the event stream");
        if self.chunked {
            self.raw.extend_from_slice(&bytes);
            dechunk(&mut self.raw, &mut self.text);
        } else {
            self.text.extend_from_slice(&bytes);
        }
        std::iter::from_fn(|| self.parse_block()).collect()
    }

    /// Every event read so far.
    pub fn seen(&self) -> &[Event] {
        &self.seen
    }

    /// Parses one block off the front of `text`, if a whole one is there. Returns `None`
    /// both for "need more bytes" and after dropping a comment-only block; the caller
    /// loops either way.
    fn parse_block(&mut self) -> Option<Event> {
        loop {
            let (end, sep) = block_end(&self.text)?;
            let block: Vec<u8> = self.text.drain(..end + sep).collect();
            let block = String::from_utf8_lossy(&block[..end]).into_owned();
            let mut event = Event {
                id: None,
                event: None,
                data: String::new(),
            };
            let mut has_field = false;
            let mut data_lines = Vec::new();
            for line in block.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
                if line.is_empty() || line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                has_field = true;
                match field {
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = Some(value.to_string()),
                    "data" => data_lines.push(value.to_string()),
                    _ => {}
                }
            }
            if has_field {
                event.data = data_lines.join("\n");
                return Some(event);
            }
        }
    }

    /// Reads more of the stream into `text`, de-chunking if needed.
    fn receive(&mut self) {
        let waiting_for = format!(
            "the next event (events so far: {:#?}; unparsed: {:?})",
            self.seen,
            String::from_utf8_lossy(&self.text)
        );
        let bytes = self.conn.read_more(&waiting_for);
        let parsed_before = self.text.len();
        if !self.chunked {
            self.text.extend_from_slice(&bytes);
            self.transcript.extend_from_slice(&bytes);
            return;
        }
        self.raw.extend_from_slice(&bytes);
        let open = dechunk(&mut self.raw, &mut self.text);
        self.transcript.extend_from_slice(&self.text[parsed_before..]);
        assert!(
            open || !self.text.is_empty(),
            "the server ended the event stream; events so far: {:#?}",
            self.seen
        );
    }
}

/// An event as a browser's `EventSource` dispatches it (a `MessageEvent`).
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatched {
    /// The event's type: its `event:` field, `message` without one.
    pub event_type: String,
    /// Its `data:` lines joined with LF.
    pub data: String,
    /// The last event ID at dispatch: the latest `id:` field so far, carried across events.
    pub last_event_id: String,
}

/// The events a browser dispatches for `stream`, read by WHATWG HTML, "Server-sent events",
/// 9.2.6 "Interpreting an event stream":
///
/// ```text
/// stream        = [ bom ] *event
/// event         = *( comment / field ) end-of-line
/// comment       = colon *any-char end-of-line
/// field         = 1*name-char [ colon [ space ] *any-char ] end-of-line
/// end-of-line   = ( cr lf / cr / lf )
/// ```
///
/// "If the line is empty, dispatch the event"; a line starting with `:` is ignored;
/// otherwise the field name is up to the first `:` and the value after it, less one
/// leading space. `event` sets the event type buffer, `data` appends its value and an LF
/// to the data buffer, `id` (unless it holds U+0000) sets the last event ID buffer, other
/// fields are ignored. To dispatch: with an empty data buffer, reset the buffers and
/// dispatch nothing; else drop the data's last LF. "Once the end of the file is reached,
/// any pending data must be discarded": a trailing incomplete line or event is not
/// dispatched.
pub fn whatwg_events(stream: &[u8]) -> Vec<Dispatched> {
    let text = String::from_utf8_lossy(stream);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (mut event_type, mut data, mut last_event_id) = (String::new(), String::new(), String::new());
    let mut dispatched = Vec::new();
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let eol = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + eol..];
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let event_type = if event_type.is_empty() { "message".to_string() } else { event_type.clone() };
                dispatched.push(Dispatched { event_type, data: data.clone(), last_event_id: last_event_id.clone() });
            }
            data.clear();
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_string(),
            _ => {}
        }
    }
    dispatched
}

/// Moves every complete chunk of a chunked body from the front of `raw` to `out`.
/// Returns false once the last (empty) chunk has been seen: the stream has ended.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    while let Some(line_end) = find(raw, b"\r\n") {
        let size_line = String::from_utf8_lossy(&raw[..line_end]).into_owned();
        let size_hex = size_line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?} in the event stream"));
        if size == 0 {
            return false;
        }
        let start = line_end + 2;
        if raw.len() < start + size + 2 {
            break;
        }
        out.extend_from_slice(&raw[start..start + size]);
        raw.drain(..start + size + 2);
    }
    true
}

/// Where the first block ends (a blank line) and the length of the separator.
fn block_end(text: &[u8]) -> Option<(usize, usize)> {
    [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| find(text, sep).map(|at| (at, sep.len())))
        .min()
}

#[cfg(test)]
mod tests {
    use super::{dechunk, whatwg_events, Dispatched};

    fn event(event_type: &str, data: &str, last_event_id: &str) -> Dispatched {
        Dispatched { event_type: event_type.into(), data: data.into(), last_event_id: last_event_id.into() }
    }

    /// The standard's own examples (9.2.6), and the corners a line-splitter gets wrong:
    /// a lone CR ends a line, the id carries over, a block without data dispatches nothing,
    /// and an unfinished event at the end is dropped.
    #[test]
    fn a_stream_is_read_as_the_whatwg_standard_reads_it() {
        let cases: [(&[u8], Vec<Dispatched>); 6] = [
            (b"data: YHOO\ndata: +2\ndata: 10\n\n", vec![event("message", "YHOO\n+2\n10", "")]),
            (
                b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
                vec![event("message", "first event", "1"), event("message", "second event", ""), event("message", " third event", "")],
            ),
            (b"data\n\ndata\ndata\n\ndata:", vec![event("message", "", ""), event("message", "\n", "")]),
            (b"\xef\xbb\xbfid: 7\revent: x\rdata: a\r\rdata: b\r\n\r\n", vec![event("x", "a", "7"), event("message", "b", "7")]),
            (b"event: lonely\nid: 3\n\ndata: after\n\n", vec![event("message", "after", "3")]),
            (b"data: done\n\ndata: not finished\n", vec![event("message", "done", "")]),
        ];
        for (stream, expected) in cases {
            assert_eq!(whatwg_events(stream), expected, "{:?}", String::from_utf8_lossy(stream));
        }
    }

    /// The stream may arrive cut anywhere: the same bytes come out whatever the cuts.
    #[test]
    fn dechunking_does_not_depend_on_where_reads_end() {
        let wire = b"6\r\nid: 1\n\r\n10\r\nevent: message\n\n\r\n0\r\n\r\n";
        for cut in 0..wire.len() {
            let (mut raw, mut out) = (wire[..cut].to_vec(), Vec::new());
            dechunk(&mut raw, &mut out);
            raw.extend_from_slice(&wire[cut..]);
            let open = dechunk(&mut raw, &mut out);
            assert!(!open, "the last chunk ends the stream (cut at {cut})");
            assert_eq!(out, b"id: 1\nevent: message\n\n", "cut at {cut}");
        }
    }
}
