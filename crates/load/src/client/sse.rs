//! Server-Sent Events, the receiving side: bytes of an event stream in, events out.
//!
//! From the HTML Living Standard, §9.2.5 "Parsing an event stream":
//!
//! ```text
//! stream        = [ bom ] *event
//! event         = *( comment / field ) end-of-line
//! comment       = colon *any-char end-of-line
//! field         = 1*name-char [ colon [ space ] *any-char ] end-of-line
//! end-of-line   = ( cr lf / cr / lf )
//! ```
//!
//! Shortcut: a bare CR as a line end is not recognised (c10k writes LF; CRLF works).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event had one.
    pub id: Option<String>,
}

/// The fields of the event being read, between calls.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    event: String,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Takes the next complete event from the front of `buf`, consuming the lines it read.
    /// `None`: `buf` holds no complete event yet (partial lines stay in `buf`).
    pub(crate) fn next_event(&mut self, buf: &mut Vec<u8>) -> Option<SseEvent> {
        let mut consumed = 0;
        let mut dispatched = None;
        while let Some(nl) = buf[consumed..].iter().position(|&b| b == b'\n') {
            let mut line = &buf[consumed..consumed + nl];
            consumed += nl + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                // A blank line dispatches; an event with no data is dropped (§9.2.6).
                let event = std::mem::take(&mut self.event);
                let id = self.id.take();
                if let Some(data) = self.data.take() {
                    let event = if event.is_empty() { "message".to_string() } else { event };
                    dispatched = Some(SseEvent { event, data, id });
                    break;
                }
                continue;
            }
            if line[0] == b':' {
                continue; // a comment: the heartbeat
            }
            let line = String::from_utf8_lossy(line);
            let (name, value) = match line.find(':') {
                Some(i) => (&line[..i], line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..])),
                None => (&line[..], ""),
            };
            match name {
                "event" => self.event = value.to_string(),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                "id" => self.id = Some(value.to_string()),
                _ => {} // `retry` and unknown fields: ignored
            }
        }
        buf.drain(..consumed);
        dispatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut parser = SseParser::default();
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        while let Some(e) = parser.next_event(&mut buf) {
            events.push(e);
        }
        (events, buf)
    }

    #[test]
    fn reads_c10k_events() {
        let (events, rest) =
            all(b": heartbeat\n\nid: 17\nevent: message\ndata: {\"id\":17}\n\nevent: reset\ndata: {}\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent { event: "message".into(), data: "{\"id\":17}".into(), id: Some("17".into()) },
                SseEvent { event: "reset".into(), data: "{}".into(), id: None },
            ]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn keeps_a_partial_event_for_later() {
        let mut parser = SseParser::default();
        let mut buf = b"id: 1\ndata: {\"a\"".to_vec();
        assert_eq!(parser.next_event(&mut buf), None);
        buf.extend_from_slice(b":1}\r\n\r\n");
        let event = parser.next_event(&mut buf).unwrap();
        assert_eq!((event.event.as_str(), event.data.as_str()), ("message", "{\"a\":1}"));
    }

    #[test]
    fn joins_data_lines() {
        let (events, _) = all(b"data:a\ndata: b\n\n");
        assert_eq!(events[0].data, "a\nb");
    }
}
