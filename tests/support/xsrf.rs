//! The XSRF dance of the Tornado routes, done as a browser does it: `GET /`, keep the
//! `_xsrf` cookie, send back the hidden input's token. Also the token formats
//! (docs/protocol.md, "XSRF"), so tests can make tokens of their own.

use super::http::{get, Response};

/// What a browser holds after loading the page: the `_xsrf` cookie and the token from the
/// page's hidden input.
#[derive(Clone, Debug)]
pub struct Xsrf {
    /// The cookie's value (without `_xsrf=`).
    pub cookie: String,
    /// The hidden input's value, to send as the `_xsrf` field.
    pub field: String,
}

impl Xsrf {
    /// Loads `GET /` and takes the cookie and the hidden input from it.
    pub fn fetch(port: u16) -> Xsrf {
        let page = get(port, "/");
        page.assert_status(200);
        let field = hidden_xsrf_input(&page.text()).unwrap_or_else(|| {
            panic!("GET / has no <input type=\"hidden\" name=\"_xsrf\">:\n{page}")
        });
        let cookie = xsrf_set_cookie(&page)
            .unwrap_or_else(|| {
                panic!("GET / without a cookie did not set the _xsrf cookie:\n{page}")
            })
            .value;
        Xsrf { cookie, field }
    }

    /// A browser that chose its own cookie (a plain hex token) and a masked copy of it
    /// for the field, made without asking the server.
    pub fn own(token: &[u8]) -> Xsrf {
        Xsrf {
            cookie: hex(token),
            field: mask_token(token, &[0x5a; 4], 1_764_140_000),
        }
    }

    /// The `Cookie` header value: `_xsrf=...`.
    pub fn cookie_header(&self) -> String {
        format!("_xsrf={}", self.cookie)
    }

    /// The token both carry, unmasked.
    pub fn token(&self) -> Vec<u8> {
        decode_token(&self.cookie)
            .unwrap_or_else(|| panic!("the _xsrf cookie {:?} is not a token", self.cookie))
    }
}

/// A `Set-Cookie` header, split into the value and its attributes.
#[derive(Clone, Debug)]
pub struct SetCookie {
    pub value: String,
    /// Attributes as (lower-cased name, value), e.g. ("path", "/"), ("httponly", "").
    pub attributes: Vec<(String, String)>,
    pub raw: String,
}

impl SetCookie {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The `Set-Cookie: _xsrf=...` of a response, if any.
pub fn xsrf_set_cookie(response: &Response) -> Option<SetCookie> {
    response
        .header_all("Set-Cookie")
        .into_iter()
        .find_map(|raw| {
            let mut parts = raw.split(';').map(str::trim);
            let (name, value) = parts.next()?.split_once('=')?;
            if name != "_xsrf" {
                return None;
            }
            let attributes = parts
                .map(|attr| match attr.split_once('=') {
                    Some((n, v)) => (n.trim().to_ascii_lowercase(), v.trim().to_string()),
                    None => (attr.to_ascii_lowercase(), String::new()),
                })
                .collect();
            Some(SetCookie {
                value: value.to_string(),
                attributes,
                raw: raw.to_string(),
            })
        })
}

/// The value of the page's `<input ... name="_xsrf" ... value="...">`, whatever the
/// order of its attributes.
pub fn hidden_xsrf_input(html: &str) -> Option<String> {
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        let tag_and_more = &rest[start..];
        let end = tag_and_more.find('>')?;
        let tag = &tag_and_more[..end];
        if tag.contains("name=\"_xsrf\"") {
            assert!(
                tag.contains("type=\"hidden\""),
                "the _xsrf input is not hidden: {tag}>"
            );
            let value_start = tag.find("value=\"")? + "value=\"".len();
            let value_len = tag[value_start..].find('"')?;
            return Some(tag[value_start..value_start + value_len].to_string());
        }
        rest = &tag_and_more[end..];
    }
    None
}

/// A token in either accepted form, unmasked: `2|MASK|MASKED|TIMESTAMP` (hex; the token is
/// MASKED xor MASK) or plain hex.
pub fn decode_token(value: &str) -> Option<Vec<u8>> {
    if let Some(rest) = value.strip_prefix("2|") {
        let mut parts = rest.split('|');
        let mask = unhex(parts.next()?)?;
        let masked = unhex(parts.next()?)?;
        let timestamp = parts.next()?;
        if parts.next().is_some() || timestamp.parse::<u64>().is_err() || mask.is_empty() {
            return None;
        }
        // Tornado's masks are 4 bytes, repeated over the token.
        Some(
            masked
                .iter()
                .zip(mask.iter().cycle())
                .map(|(b, m)| b ^ m)
                .collect(),
        )
    } else {
        unhex(value)
    }
}

/// `token` in Tornado's masked form with a 4-byte `mask`.
pub fn mask_token(token: &[u8], mask: &[u8; 4], timestamp: u64) -> String {
    let masked: Vec<u8> = token
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect();
    format!("2|{}|{}|{timestamp}", hex(mask), hex(&masked))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
