//! What a message's text may hold, decided before any store is called: the one character
//! refused, and the control characters Tornado's form route maps to spaces.
//!
//! A body (or sender) is stored exactly as sent, with one exception: U+0000. PostgreSQL
//! cannot keep a NUL in a `text` column (`invalid byte sequence for encoding "UTF8":
//! 0x00`), so a message holding one would be stored on SQLite and MySQL and refused on
//! PostgreSQL, and a retry loop on it made a PostgreSQL server answer 503 forever. The
//! same message must mean the same thing on every store, so no route hands a NUL to one:
//!
//! - the native API and the WebSocket refuse it (400, an error frame) saying why, since
//!   their clients are programs that can be told;
//! - Tornado's `POST /a/message/new` does what Tornado does with every argument
//!   (`RequestHandler._remove_control_chars_regex`, `[\x00-\x08\x0e-\x1f]`): maps the C0
//!   control characters but TAB, LF, VT, FF and CR to spaces, then strips surrounding
//!   white space. Its client (Tornado's chat.js, a browser form) never expects a refusal.
//!
//! Everything else (markup, `javascript:` text, bidirectional overrides, CR and LF) is
//! text, stored as is and escaped by each output on the way out (see [`super::render`]).

/// Why a native or WebSocket post whose body holds U+0000 is refused.
pub const NUL_IN_BODY: &str =
    "message body contains a NUL character (U+0000), which no message may hold; remove it and post again";
/// Why a native or WebSocket post whose sender holds U+0000 is refused.
pub const NUL_IN_FROM: &str =
    "'from' contains a NUL character (U+0000), which no nickname may hold; remove it and post again";

/// Whether `text` holds U+0000, which no store is handed (see the module docs).
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Whether Tornado replaces `c` with a space in a request argument: U+0000-U+0008 and
/// U+000E-U+001F (TAB, LF, VT, FF and CR are kept).
pub fn tornado_maps_to_space(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{e}'..='\u{1f}')
}

/// A form argument as Tornado's `get_argument` reads it: control characters (see
/// [`tornado_maps_to_space`]) become spaces, then surrounding white space is stripped.
pub fn tornado_argument(value: &str) -> String {
    let mapped: String = value.chars().map(|c| if tornado_maps_to_space(c) { ' ' } else { c }).collect();
    mapped.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tornado_maps_c0_controls_but_tab_lf_vt_ff_cr_to_spaces() {
        let every_c0: String = (0u8..0x20).map(char::from).collect();
        let mapped: String = every_c0.chars().map(|c| if tornado_maps_to_space(c) { ' ' } else { c }).collect();
        assert_eq!(mapped, format!("{}\t\n\u{b}\u{c}\r{}", " ".repeat(9), " ".repeat(18)));
        assert_eq!(tornado_argument("  a\0b\u{1f}c\td\r\ne\u{7f}  "), "a b c\td\r\ne\u{7f}");
        assert_eq!(tornado_argument("\0\u{1}"), "", "only controls: an empty body, as Tornado");
    }

    #[test]
    fn only_nul_is_refused() {
        assert!(has_nul("a\0b"));
        assert!(!has_nul("a\u{1}b\u{202e}c\r\n"));
    }
}
