//! Token verification (`c10k_core::chat::auth`): what is accepted, what is refused and why,
//! with a fixed clock. The attacks of RFC 8725 2.1 and 2.8 (`alg: none`, an HMAC token
//! signed with a public key, "algorithm confusion") each get a test.

use std::collections::BTreeMap;

use c10k_core::chat::auth::{mint, Access, Auth, NewToken, Refusal, RoomPattern};
use c10k_core::store::RoomId;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &[u8] = b"a-secret-of-thirty-two-bytes-or-more";
/// 2026-12-01 00:00:00 UTC, in milliseconds: the clock of every test here.
const NOW_MS: u64 = 1_796_083_200_000;
const NOW_S: u64 = NOW_MS / 1000;

/// An Ed25519 key as PKCS#8 DER (RFC 8410 7): the fixed prefix, then a 32-byte seed.
fn ed25519_key(seed: u8) -> EncodingKey {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend([seed; 32]);
    EncodingKey::from_ed_der(&der)
}

/// A JWK set of one Ed25519 public key, `kid` "ed".
fn jwks_of(key: &EncodingKey) -> String {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::EdDSA).expect("a JWK of the key");
    jwk.common.key_id = Some("ed".into());
    serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("JSON")
}

fn claims(sub: &str, exp: u64, rooms: serde_json::Value) -> serde_json::Value {
    json!({ "sub": sub, "exp": exp, "rooms": rooms })
}

fn sign(header: Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("a token")
}

fn secret_auth() -> Auth {
    Auth::with_secret(SECRET).expect("a long enough secret").with_private_rooms(vec![
        RoomPattern::parse("staff").unwrap(),
        RoomPattern::parse("team-*").unwrap(),
    ])
}

fn room(name: &str) -> RoomId {
    RoomId::new(name).expect("a room name")
}

fn bad_token(result: Result<c10k_core::chat::auth::Grant, Refusal>) -> String {
    match result {
        Err(Refusal::BadToken(why)) => why,
        other => panic!("expected the token to be refused as bad, got {other:?}"),
    }
}

#[test]
fn a_minted_token_verifies_and_grants_its_rooms_only() {
    let auth = secret_auth();
    let rooms = BTreeMap::from([("staff".to_string(), vec!["read".to_string(), "post".to_string()]), ("team-*".to_string(), vec!["read".to_string()])]);
    let token = mint(SECRET, &NewToken { sub: "alice".into(), name: Some("Alice".into()), rooms, expires_s: NOW_S + 60, audience: None }).unwrap();
    let grant = auth.verify(&token, NOW_MS).expect("a good token");
    assert_eq!((grant.sub.as_str(), grant.name.as_str(), grant.expires_ms), ("alice", "Alice", (NOW_S + 60) * 1000));
    assert_eq!(auth.permits(Some(&grant), &room("staff"), Access::Post), Ok(()));
    assert_eq!(auth.permits(Some(&grant), &room("team-red"), Access::Read), Ok(()));
    assert!(matches!(auth.permits(Some(&grant), &room("team-red"), Access::Post), Err(Refusal::Forbidden(_))));
    assert!(matches!(auth.permits(Some(&grant), &room("staffroom"), Access::Read), Ok(())), "staffroom is open: not private");
    assert!(matches!(auth.permits(None, &room("staff"), Access::Read), Err(Refusal::NoToken(_))));
    assert_eq!(auth.permits(None, &room("main"), Access::Post), Ok(()), "an open room needs no token");
}

#[test]
fn a_token_is_refused_from_its_exp_and_before_its_nbf() {
    let auth = secret_auth();
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let expired = sign(Header::new(Algorithm::HS256), &claims("a", NOW_S, json!({})), &key);
    assert!(bad_token(auth.verify(&expired, NOW_MS)).contains("expired"));
    let alive = sign(Header::new(Algorithm::HS256), &claims("a", NOW_S + 1, json!({})), &key);
    assert!(auth.verify(&alive, NOW_MS).is_ok(), "valid until its exp second");
    let early = sign(Header::new(Algorithm::HS256), &json!({"sub": "a", "exp": NOW_S + 60, "nbf": NOW_S + 10}), &key);
    assert!(bad_token(auth.verify(&early, NOW_MS)).contains("not valid before"));
    let no_exp = sign(Header::new(Algorithm::HS256), &json!({"sub": "a"}), &key);
    assert!(bad_token(auth.verify(&no_exp, NOW_MS)).contains("exp"));
    let mut with_kid = Header::new(Algorithm::HS256);
    with_kid.kid = Some("issuer-key-7".into());
    assert!(auth.verify(&sign(with_kid, &claims("a", NOW_S + 60, json!({})), &key), NOW_MS).is_ok(), "a secret takes a token with a key id");
    let no_sub = sign(Header::new(Algorithm::HS256), &json!({"exp": NOW_S + 60}), &key);
    assert!(bad_token(auth.verify(&no_sub, NOW_MS)).contains("sub"));
}

#[test]
fn another_secret_a_tampered_claim_and_garbage_are_refused() {
    let auth = secret_auth();
    let other = EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!!").unwrap();
    let forged = sign(Header::new(Algorithm::HS256), &claims("eve", NOW_S + 60, json!({"staff": ["read"]})), &other);
    assert!(bad_token(auth.verify(&forged, NOW_MS)).contains("signature"));
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let good = sign(Header::new(Algorithm::HS256), &claims("bob", NOW_S + 60, json!({})), &key);
    let parts: Vec<&str> = good.split('.').collect();
    let evil_claims = jsonwebtoken::crypto::sign(b"x", &key, Algorithm::HS256).unwrap(); // any other base64url text
    let tampered = format!("{}.{}.{}", parts[0], evil_claims, parts[2]);
    assert!(auth.verify(&tampered, NOW_MS).is_err(), "a changed payload does not verify");
    for garbage in ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9"] {
        assert!(matches!(auth.verify(garbage, NOW_MS), Err(Refusal::BadToken(_))), "{garbage:?}");
    }
    let unknown = sign(Header::new(Algorithm::HS256), &claims("bob", NOW_S + 60, json!({"staff": ["write"]})), &key);
    assert!(bad_token(auth.verify(&unknown, NOW_MS)).contains("unknown permission 'write'"));
}

#[test]
fn alg_none_is_refused() {
    let auth = secret_auth();
    let b64 = |v: &serde_json::Value| base64url(v.to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(&claims("eve", NOW_S + 60, json!({"*": ["read", "post"]}))));
        assert!(matches!(auth.verify(&token, NOW_MS), Err(Refusal::BadToken(_))), "alg {alg}");
    }
}

#[test]
fn a_secret_takes_hmac_only_and_a_public_key_its_own_algorithm_only() {
    let ed = ed25519_key(7);
    let jwks = Auth::with_jwks(&jwks_of(&ed)).expect("a JWK set").with_private_rooms(vec![RoomPattern::parse("*").unwrap()]);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let good = sign(header, &claims("carol", NOW_S + 60, json!({"staff": ["read"]})), &ed);
    let grant = jwks.verify(&good, NOW_MS).expect("an EdDSA token verifies against its JWK");
    assert_eq!(jwks.permits(Some(&grant), &room("staff"), Access::Read), Ok(()));
    assert!(matches!(jwks.permits(Some(&grant), &room("main"), Access::Read), Err(Refusal::Forbidden(_))), "'*' made every room private");

    // Algorithm confusion: an HS256 token whose HMAC key is the public key's bytes, with
    // the public key's kid, must not verify against that public key.
    let public: serde_json::Value = serde_json::from_str(&jwks_of(&ed)).unwrap();
    let x = public["keys"][0]["x"].as_str().unwrap().to_string();
    for secret in [x.as_bytes().to_vec(), base64url_decode(&x)] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed".into());
        let confused = sign(header, &claims("eve", NOW_S + 60, json!({"*": ["read", "post"]})), &EncodingKey::from_secret(&secret).unwrap());
        let why = bad_token(jwks.verify(&confused, NOW_MS));
        assert!(why.contains("HS256") && why.contains("does not take"), "{why}");
    }
    // The other way: a secret does not take an EdDSA token.
    let why = bad_token(secret_auth().verify(&sign(Header::new(Algorithm::EdDSA), &claims("eve", NOW_S + 60, json!({})), &ed), NOW_MS));
    assert!(why.contains("EdDSA"), "{why}");
    // A kid the set does not have, and a token of another Ed25519 key under the right kid.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("elsewhere".into());
    assert!(bad_token(jwks.verify(&sign(header, &claims("eve", NOW_S + 60, json!({})), &ed), NOW_MS)).contains("key id"));
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let other_key = sign(header, &claims("eve", NOW_S + 60, json!({})), &ed25519_key(8));
    assert!(bad_token(jwks.verify(&other_key, NOW_MS)).contains("signature"));
}

#[test]
fn keys_that_cannot_be_trusted_are_refused_at_start() {
    assert!(Auth::with_secret(b"short").unwrap_err().contains("at least 32"));
    assert!(Auth::with_jwks("{\"keys\": []}").unwrap_err().contains("no keys"));
    assert!(Auth::with_jwks("not json").unwrap_err().contains("JWK set"));
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}).to_string();
    assert!(Auth::with_jwks(&oct).unwrap_err().contains("secret"), "a JWK set is for public keys");
    let mismatched = {
        let mut set: serde_json::Value = serde_json::from_str(&jwks_of(&ed25519_key(1))).unwrap();
        set["keys"][0]["alg"] = json!("RS256");
        set.to_string()
    };
    assert!(Auth::with_jwks(&mismatched).unwrap_err().contains("does not go with"), "an alg that is not the key's");
}

#[test]
fn an_audience_is_checked_when_the_server_names_one() {
    let key = EncodingKey::from_secret(SECRET).unwrap();
    let for_chat = sign(Header::new(Algorithm::HS256), &json!({"sub": "a", "exp": NOW_S + 60, "aud": "chat"}), &key);
    let for_bank = sign(Header::new(Algorithm::HS256), &json!({"sub": "a", "exp": NOW_S + 60, "aud": "bank"}), &key);
    let chat = Auth::with_secret(SECRET).unwrap().with_audience(Some("chat".into()));
    assert!(chat.verify(&for_chat, NOW_MS).is_ok());
    assert!(bad_token(chat.verify(&for_bank, NOW_MS)).contains("audience"));
    assert!(bad_token(Auth::with_secret(SECRET).unwrap().verify(&for_chat, NOW_MS)).contains("audience"), "no --auth-audience: a token with aud is for someone else");
}

#[test]
fn room_patterns_are_names_prefixes_or_everything() {
    assert!(RoomPattern::parse("staff").unwrap().matches("staff"));
    assert!(!RoomPattern::parse("staff").unwrap().matches("staff2"));
    assert!(RoomPattern::parse("team-*").unwrap().matches("team-"));
    assert!(RoomPattern::parse("*").unwrap().matches("anything"));
    for bad in ["", "a b", "a*b", "**", "x/y"] {
        assert!(RoomPattern::parse(bad).is_err(), "{bad:?}");
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let values: Vec<u32> = text.bytes().map(|c| ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32).collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
