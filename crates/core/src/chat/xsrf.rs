//! Tornado's XSRF protection, token for token.
//!
//! The `_xsrf` cookie holds a random 16-byte token. Every page render puts a freshly
//! masked copy of it in the form (`2|MASK|TOKEN^MASK|TIMESTAMP`, hex; the mask defeats
//! BREACH-style compression attacks), and a POST must send a copy back in the `_xsrf`
//! field or the `X-Xsrftoken` / `X-Csrftoken` header. Both sides are unmasked and
//! compared in constant time. The plain hex form (Tornado's version 1) is accepted too.
//!
//! The cookie is readable by the page's script on purpose: Tornado's chat.js reads it
//! from `document.cookie`. It ends in a digit (the timestamp), which Tornado requires of
//! cookie values (a word character).

use std::sync::Mutex;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Bytes in a token.
pub const TOKEN_LEN: usize = 16;

/// Makes and checks tokens. The random generator is seeded by the caller (the core reads
/// no entropy source itself).
#[derive(Debug)]
pub struct Xsrf {
    rng: Mutex<ChaCha12Rng>,
}

/// Why a POST was refused (the text goes into the 403 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsrfError {
    /// No `_xsrf` argument or header.
    MissingArgument,
    /// No `_xsrf` cookie.
    MissingCookie,
    /// One of them is not a token.
    Malformed,
    /// They hold different tokens.
    Mismatch,
}

impl XsrfError {
    /// A message for the 403 body.
    pub fn message(self) -> &'static str {
        match self {
            XsrfError::MissingArgument => "'_xsrf' argument missing from POST",
            XsrfError::MissingCookie => "'_xsrf' cookie missing: load the page first (GET /)",
            XsrfError::Malformed => "'_xsrf' argument or cookie is not a valid token",
            XsrfError::Mismatch => "XSRF cookie does not match POST argument",
        }
    }
}

impl Xsrf {
    /// A token source seeded with 32 bytes of the caller's entropy.
    pub fn new(seed: [u8; 32]) -> Xsrf {
        Xsrf { rng: Mutex::new(ChaCha12Rng::from_seed(seed)) }
    }

    fn fill(&self, bytes: &mut [u8]) {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).fill_bytes(bytes);
    }

    /// A new random token.
    pub fn new_token(&self) -> [u8; TOKEN_LEN] {
        let mut token = [0u8; TOKEN_LEN];
        self.fill(&mut token);
        token
    }

    /// The masked form of `token`, with a fresh 4-byte mask, stamped with `unix_secs`.
    pub fn mask(&self, token: &[u8], unix_secs: u64) -> String {
        let mut mask = [0u8; 4];
        self.fill(&mut mask);
        let masked: Vec<u8> = token.iter().zip(mask.iter().cycle()).map(|(t, m)| t ^ m).collect();
        format!("2|{}|{}|{}", hex(&mask), hex(&masked), unix_secs)
    }
}

/// Unmasks a token in either accepted form; `None` if it is neither.
pub fn decode(value: &str) -> Option<Vec<u8>> {
    if let Some(rest) = value.strip_prefix("2|") {
        let mut parts = rest.split('|');
        let (mask, masked, timestamp) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mask = unhex(mask)?;
        let masked = unhex(masked)?;
        if mask.is_empty() || masked.is_empty() {
            return None;
        }
        Some(masked.iter().zip(mask.iter().cycle()).map(|(t, m)| t ^ m).collect())
    } else {
        unhex(value).filter(|t| !t.is_empty())
    }
}

/// Checks a POST: the cookie and the submitted copy must hold the same token.
pub fn check(cookie: Option<&str>, submitted: Option<&str>) -> Result<(), XsrfError> {
    let submitted = submitted.ok_or(XsrfError::MissingArgument)?;
    let cookie = cookie.ok_or(XsrfError::MissingCookie)?;
    let a = decode(submitted).ok_or(XsrfError::Malformed)?;
    let b = decode(cookie).ok_or(XsrfError::Malformed)?;
    if constant_time_eq(&a, &b) {
        Ok(())
    } else {
        Err(XsrfError::Mismatch)
    }
}

/// Compares without an early exit on the first differing byte (lengths are not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_tokens_differ_per_render_but_unmask_to_the_same_token() {
        let x = Xsrf::new([7; 32]);
        let token = x.new_token();
        let a = x.mask(&token, 100);
        let b = x.mask(&token, 100);
        assert_ne!(a, b);
        assert_eq!(decode(&a).unwrap(), token);
        assert_eq!(decode(&b).unwrap(), token);
        assert!(check(Some(&a), Some(&b)).is_ok());
        assert!(check(Some(&a), Some(&hex(&token))).is_ok(), "plain hex form accepted");
        assert!(a.ends_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn refusals_say_why() {
        let x = Xsrf::new([1; 32]);
        let t1 = x.mask(&x.new_token(), 1);
        let t2 = x.mask(&x.new_token(), 1);
        assert_eq!(check(Some(&t1), None), Err(XsrfError::MissingArgument));
        assert_eq!(check(None, Some(&t1)), Err(XsrfError::MissingCookie));
        assert_eq!(check(Some(&t1), Some(&t2)), Err(XsrfError::Mismatch));
        for bad in ["", "zz", "2|00|", "2|0|00|1", "2|00|00|x", "2||00|1", "2|00|00|1|9", "abc"] {
            assert_eq!(check(Some(&t1), Some(bad)), Err(XsrfError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn accepts_a_token_masked_the_way_tornado_masks_it() {
        // Tornado: mask 4 bytes, token XOR mask repeated, hex, then the timestamp.
        let token = [0xAAu8; 16];
        let mask = [1u8, 2, 3, 4];
        let masked: Vec<u8> = token.iter().zip(mask.iter().cycle()).map(|(t, m)| t ^ m).collect();
        let value = format!("2|{}|{}|1700000000", hex(&mask), hex(&masked));
        assert_eq!(decode(&value).unwrap(), token.to_vec());
    }
}
