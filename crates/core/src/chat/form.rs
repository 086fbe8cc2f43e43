//! Reading what a request carries: form and query arguments, cookies.

use crate::http::Request;

/// Decoded `name=value` pairs of a query string or an `application/x-www-form-urlencoded`
/// body, in order, with `+` as space and percent-escapes decoded (WHATWG URL standard).
#[derive(Debug, Clone, Default)]
pub struct Args(Vec<(String, String)>);

impl Args {
    /// Parses urlencoded bytes.
    pub fn parse(bytes: &[u8]) -> Args {
        Args(form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// The query arguments of a request.
    pub fn query(request: &Request) -> Args {
        Args::parse(request.query().as_bytes())
    }

    /// The form arguments of a POST (an empty set unless the body is urlencoded).
    pub fn form(request: &Request) -> Args {
        let urlencoded = request
            .headers
            .get("content-type")
            .map(|ct| media_type(ct) == "application/x-www-form-urlencoded")
            .unwrap_or(false);
        if urlencoded {
            Args::parse(&request.body)
        } else {
            Args::default()
        }
    }

    /// The last value of `name` (Tornado's `get_argument` takes the last).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 5.4).
pub fn cookie<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .get_all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Headers, Method};

    fn request(target: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.push(*k, v.as_bytes().to_vec());
        }
        Request {
            method: Method::Post,
            target: target.into(),
            version_minor: 1,
            headers: h,
            body: body.as_bytes().to_vec(),
            keep_alive: true,
            peer: None,
        }
    }

    #[test]
    fn form_and_query_decode_plus_and_percent() {
        let r = request(
            "/x?a=1&b=two+words&a=3",
            &[("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")],
            "body=hello%20world%21&next=%2F",
        );
        assert_eq!(Args::query(&r).get("a"), Some("3"));
        assert_eq!(Args::query(&r).get("b"), Some("two words"));
        assert_eq!(Args::form(&r).get("body"), Some("hello world!"));
        assert_eq!(Args::form(&r).get("next"), Some("/"));
    }

    #[test]
    fn form_ignores_other_media_types() {
        let r = request("/", &[("Content-Type", "application/json")], "body=x");
        assert_eq!(Args::form(&r).get("body"), None);
    }

    #[test]
    fn cookies_across_headers() {
        let r = request("/", &[("Cookie", "a=1; _xsrf=2|ab|cd|9"), ("Cookie", "b=2")], "");
        assert_eq!(cookie(&r, "_xsrf"), Some("2|ab|cd|9"));
        assert_eq!(cookie(&r, "b"), Some("2"));
        assert_eq!(cookie(&r, "c"), None);
    }
}
