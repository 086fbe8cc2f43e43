//! A Server-Sent Events reader: opens `GET .../events`, then parses the stream into
//! `id:` / `event:` / `data:` blocks, skipping comment-only blocks (heartbeats). The
//! stream may be chunked or delimited by the connection's close: both are read.

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
        }
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
        if !self.chunked {
            self.text.extend_from_slice(&bytes);
            return;
        }
        self.raw.extend_from_slice(&bytes);
        let open = dechunk(&mut self.raw, &mut self.text);
        assert!(
            open || !self.text.is_empty(),
            "the server ended the event stream; events so far: {:#?}",
            self.seen
        );
    }
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
    use super::dechunk;

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
