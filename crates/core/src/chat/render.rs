//! The JSON shapes and HTML fragments of a message, rendered once when it is published.
//!
//! A broadcast to 10,000 subscribers copies these strings; it never re-serialises.
//! All JSON the server writes escapes `</` as `<\/` (as Tornado's `json_encode` does), so
//! that a message body can never close a `<script>` element it is embedded in.

use serde::Serialize;

use crate::store::Message;

/// A message with its wire forms.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The message.
    pub message: Message,
    /// The native API's JSON object for it.
    pub json: String,
    /// Tornado's JSON object for it: `{"id": "17", "body": ..., "html": ...}`.
    pub tornado_json: String,
    /// Tornado's HTML fragment: `<div class="message" id="m17">...</div>` and a newline.
    pub html: String,
    tornado_id: String,
}

#[derive(Serialize)]
struct TornadoMessage<'a> {
    id: &'a str,
    body: &'a str,
    html: &'a str,
}

impl Rendered {
    /// Renders every wire form of `message`.
    pub fn new(message: Message) -> Rendered {
        let tornado_id = message.id.to_string();
        let html = format!(
            "<div class=\"message\" id=\"m{}\">{}</div>\n",
            tornado_id,
            linkify(&message.body)
        );
        let tornado_json =
            to_json(&TornadoMessage { id: &tornado_id, body: &message.body, html: &html });
        let json = to_json(&message);
        Rendered { message, json, tornado_json, html, tornado_id }
    }

    /// The id as Tornado's routes show it (a string).
    pub fn tornado_id(&self) -> &str {
        &self.tornado_id
    }
}

/// Serialises to JSON with `</` escaped as `<\/`.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising our own plain structs and maps cannot fail.
    let json = serde_json::to_string(value).expect("JSON serialisation of plain data");
    if json.contains("</") {
        json.replace("</", "<\\/")
    } else {
        json
    }
}

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `text` and turns `http://`, `https://` and `www.` links into anchors, like
/// Tornado's `linkify` with its default protocols. A link ends at white space, at a
/// character that cannot appear unescaped in a URL (`<>"'`), and loses trailing
/// punctuation (`.,;:!?)`) unless the parenthesis was opened inside it.
pub fn linkify(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(start) = find_link_start(rest) {
        out.push_str(&escape_html(&rest[..start]));
        let candidate = &rest[start..];
        let mut end = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(candidate.len());
        loop {
            let trimmed = &candidate[..end];
            let Some(last) = trimmed.chars().last() else { break };
            let opens = trimmed.matches('(').count();
            let closes = trimmed.matches(')').count();
            let strip = matches!(last, '.' | ',' | ';' | ':' | '!' | '?')
                || (last == ')' && closes > opens);
            if !strip {
                break;
            }
            end -= last.len_utf8();
        }
        let url = &candidate[..end];
        let scheme_only = url == "http://" || url == "https://" || url == "www.";
        if end == 0 || scheme_only {
            // Not a link after all: emit the first character and scan on.
            let first = candidate.chars().next().map_or(1, char::len_utf8);
            out.push_str(&escape_html(&candidate[..first]));
            rest = &candidate[first..];
            continue;
        }
        let href = if url.starts_with("www.") { format!("http://{url}") } else { url.to_string() };
        out.push_str("<a href=\"");
        out.push_str(&escape_html(&href));
        out.push_str("\">");
        out.push_str(&escape_html(url));
        out.push_str("</a>");
        rest = &candidate[end..];
    }
    out.push_str(&escape_html(rest));
    out
}

/// The byte offset of the next `http://`, `https://` or `www.` that begins a word.
fn find_link_start(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut best: Option<usize> = None;
    for prefix in ["http://", "https://", "www."] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(prefix) {
            let at = from + i;
            let word_start = text[..at].chars().last().map_or(true, |c| !c.is_alphanumeric());
            if word_start {
                best = Some(best.map_or(at, |b: usize| b.min(at)));
                break;
            }
            from = at + prefix.len();
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageId, RoomId};

    fn message(id: u64, body: &str) -> Message {
        Message { id: MessageId(id), room: RoomId::main(), body: body.into(), from: "ann".into(), time_ms: 5 }
    }

    #[test]
    fn html_escapes_markup_and_carries_a_css_safe_id() {
        let r = Rendered::new(message(17, "<script>alert('x')</script>"));
        assert_eq!(
            r.html,
            "<div class=\"message\" id=\"m17\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</div>\n"
        );
    }

    #[test]
    fn json_never_contains_a_closing_tag_sequence() {
        let r = Rendered::new(message(1, "</script><b>"));
        assert!(!r.json.contains("</"), "{}", r.json);
        assert!(!r.tornado_json.contains("</"), "{}", r.tornado_json);
        let back: serde_json::Value = serde_json::from_str(&r.tornado_json).unwrap();
        assert_eq!(back["body"], "</script><b>");
        assert_eq!(back["id"], "1");
    }

    #[test]
    fn native_json_has_numeric_id_and_time() {
        let r = Rendered::new(message(3, "hi"));
        let v: serde_json::Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["room"], "main");
        assert_eq!(v["from"], "ann");
        assert_eq!(v["time"], 5);
    }

    #[test]
    fn linkify_cases() {
        let cases = [
            ("plain text", "plain text"),
            ("see http://a.example/x?y=1&z=2.", "see <a href=\"http://a.example/x?y=1&amp;z=2\">http://a.example/x?y=1&amp;z=2</a>."),
            ("(https://b.example/p)", "(<a href=\"https://b.example/p\">https://b.example/p</a>)"),
            ("www.c.example", "<a href=\"http://www.c.example\">www.c.example</a>"),
            ("javascript:alert(1)", "javascript:alert(1)"),
            ("http://", "http://"),
            ("xhttp://no", "xhttp://no"),
            ("a <b> http://d.example\"onclick", "a &lt;b&gt; <a href=\"http://d.example\">http://d.example</a>&quot;onclick"),
        ];
        for (input, expected) in cases {
            assert_eq!(linkify(input), expected, "input {input:?}");
        }
    }
}
