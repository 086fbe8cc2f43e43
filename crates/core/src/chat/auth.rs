//! Tokens and room permissions: who may read and post where (`--auth-secret`,
//! `--auth-jwks`, `--private-room`).
//!
//! Off by default: every room is open to everyone, as in Tornado's demo. With a key the
//! server verifies the JSON Web Tokens (RFC 7519) that clients present, and the rooms named
//! by `--private-room` open only to a token whose `rooms` claim grants them. Open rooms stay
//! open; a client that presents a token there is held to it all the same (a bad or expired
//! token is refused, not taken as "nobody"), and its posts carry the token's name.
//!
//! ## The token
//!
//! ```json
//! {"sub": "alice", "name": "Alice", "exp": 1767225600,
//!  "rooms": {"staff": ["read", "post"], "news": ["read"], "team-*": ["read", "post"]}}
//! ```
//!
//! - `sub` (required): who the client is. Posts are signed with `name`, or `sub` without
//!   one, whatever `from` the client sends; the rate limits count per `sub`, not per address.
//! - `exp` (required) and `nbf` (optional): Unix seconds, checked against the time the model
//!   read for the request (the core reads no clock), with no leeway. A stream outlives no
//!   token: an SSE stream ends with an `error` event, a WebSocket with close code
//!   [`TOKEN_EXPIRED_CLOSE`], a long-poll answers at `exp` as at its deadline; the client
//!   resumes with a fresh token from its last id and loses nothing.
//! - `aud`: a token for some other audience is refused unless `--auth-audience` names it.
//! - `rooms`: room names, `prefix-*` patterns or `*`, each with the permissions `read`
//!   (poll, page through history, SSE, WebSocket) and `post`. Only private rooms ask for
//!   them.
//!
//! A client sends it as `Authorization: Bearer TOKEN` (RFC 6750 2.1) or, where it cannot
//! set a header (a browser's `EventSource` and `WebSocket`), as `?access_token=TOKEN`
//! (RFC 6750 2.3). A refusal is 401 with `WWW-Authenticate: Bearer ...` (no token, or a
//! bad one) or 403 (a good token without the permission), with the reason in the body; a
//! WebSocket is refused before its 101.
//!
//! ## Keys and algorithm confusion
//!
//! The algorithms a key accepts are the key's, never the token header's say: a secret
//! (`--auth-secret`) accepts HS256/384/512 only, and each key of a JWK set (`--auth-jwks`)
//! the one algorithm it names (or, without `alg`, those of its kind: RS*/PS* for RSA,
//! ES256/ES384 for its curve, EdDSA). So a token signed with HMAC over an RSA key's public
//! bytes ("algorithm confusion") is refused, and `"alg": "none"` is no algorithm at all.
//! The signature is checked by the `jsonwebtoken` crate (RustCrypto backend).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::http::{Request, StatusCode};
use crate::store::RoomId;

/// The close code of a WebSocket whose token expired (a private-use code, RFC 6455 7.4.2,
/// echoing HTTP's 401): reconnect with a fresh token and `?after=` the last id.
pub const TOKEN_EXPIRED_CLOSE: u16 = 4401;
/// The reason given when a stream's token expires.
pub const TOKEN_EXPIRED: &str = "token expired: reconnect with a fresh token (and your last id, to miss nothing)";
/// The shortest HMAC secret accepted: the hash's size for HS256 (RFC 7518 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// What a request asks to do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Poll, page through history, subscribe.
    Read,
    /// Post a message.
    Post,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Post => "post",
        }
    }
}

/// Room names: one room, every room with a prefix (`team-*`), or all (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    /// This room only.
    Exact(String),
    /// Every room whose name starts so (`*` alone: every room).
    Prefix(String),
}

impl RoomPattern {
    /// Reads `staff`, `team-*` or `*`; anything else is an error that says what a room name is.
    pub fn parse(text: &str) -> Result<RoomPattern, String> {
        let (stem, prefix) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        let valid = stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid || (stem.is_empty() && !prefix) || stem.len() > 64 {
            return Err(format!(
                "'{text}' is no room pattern: give a room name (1 to 64 letters, digits, _ or -), \
                 a prefix ending in '*' ('team-*'), or '*' for every room"
            ));
        }
        Ok(if prefix { RoomPattern::Prefix(stem.to_string()) } else { RoomPattern::Exact(stem.to_string()) })
    }

    /// Whether `room` is one of these.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            RoomPattern::Exact(name) => name == room,
            RoomPattern::Prefix(stem) => room.starts_with(stem.as_str()),
        }
    }
}

/// What a token lets its holder do in the rooms its pattern names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Permissions {
    read: bool,
    post: bool,
}

impl Permissions {
    fn allow(self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Post => self.post,
        }
    }
}

/// A verified token: who, until when, and where.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's `sub`.
    pub sub: String,
    /// The name posts are signed with: the token's `name`, or its `sub`.
    pub name: String,
    /// The token's `exp`, in Unix milliseconds.
    pub expires_ms: u64,
    rooms: Vec<(RoomPattern, Permissions)>,
}

impl Grant {
    fn allows(&self, room: &str, access: Access) -> bool {
        self.rooms.iter().any(|(pattern, permissions)| pattern.matches(room) && permissions.allow(access))
    }

    /// A key for `sub` that the rate limiters count by: `sub` hashed under the process's
    /// `seed` (the subs come signed, so nobody picks them to collide).
    pub fn user_hash(&self, seed: &[u8; 32]) -> u64 {
        let mut state = DefaultHasher::new();
        seed.hash(&mut state);
        self.sub.hash(&mut state);
        state.finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A private room, and no token.
    NoToken(String),
    /// A token that does not verify, is malformed, or has expired.
    BadToken(String),
    /// A good token without the permission.
    Forbidden(String),
}

impl Refusal {
    /// 401 for no token or a bad one, 403 for a missing permission (RFC 6750 3.1).
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoToken(_) | Refusal::BadToken(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }

    /// What the client is told.
    pub fn why(&self) -> &str {
        match self {
            Refusal::NoToken(why) | Refusal::BadToken(why) | Refusal::Forbidden(why) => why,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 3).
    pub fn challenge(&self) -> String {
        let description = self.why().replace(['"', '\\'], "'");
        match self {
            Refusal::NoToken(_) => "Bearer realm=\"c10k\"".to_string(),
            Refusal::BadToken(_) => format!("Bearer realm=\"c10k\", error=\"invalid_token\", error_description=\"{description}\""),
            Refusal::Forbidden(_) => {
                format!("Bearer realm=\"c10k\", error=\"insufficient_scope\", error_description=\"{description}\"")
            }
        }
    }
}

/// One key a token may be signed with.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The keys, the private rooms and the audience: everything a request's token is checked
/// against.
pub struct Auth {
    keys: Vec<Key>,
    private: Vec<RoomPattern>,
    audience: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys.len())
            .field("private", &self.private)
            .field("audience", &self.audience)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: BTreeMap<String, Vec<String>>,
}

impl Auth {
    /// Tokens signed with HMAC under `secret` (HS256, HS384 or HS512).
    pub fn with_secret(secret: &[u8]) -> Result<Auth, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the auth secret has {} bytes; it needs at least {MIN_SECRET_BYTES} (RFC 7518 3.2): \
                 make one with `openssl rand -base64 32`",
                secret.len()
            ));
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| format!("the auth secret: {e}"))?;
        let algorithms = vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        Ok(Auth { keys: vec![Key { kid: None, key, algorithms }], private: Vec::new(), audience: None })
    }

    /// Tokens signed with any key of a JWK set (RFC 7517), given as its JSON text. Secrets
    /// (`"kty": "oct"`) are refused here: a JWK set is for public keys.
    pub fn with_jwks(json: &str) -> Result<Auth, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("the JWK set is not one (RFC 7517 5): {e}"))?;
        if set.keys.is_empty() {
            return Err("the JWK set has no keys".to_string());
        }
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let which = match &jwk.common.key_id {
                Some(kid) => format!("key '{kid}'"),
                None => format!("key {}", i + 1),
            };
            let kind: &[Algorithm] = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => &[
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => &[Algorithm::ES256],
                    EllipticCurve::P384 => &[Algorithm::ES384],
                    _ => return Err(format!("the JWK set's {which}: curve {:?} is not supported (P-256, P-384)", ec.curve)),
                },
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                AlgorithmParameters::OctetKeyPair(okp) => {
                    return Err(format!("the JWK set's {which}: curve {:?} is not supported (Ed25519)", okp.curve))
                }
                AlgorithmParameters::OctetKey(_) => {
                    return Err(format!(
                        "the JWK set's {which} is a secret (kty 'oct'); give a secret with --auth-secret, public keys here"
                    ))
                }
                _ => {
                    return Err(format!("the JWK set's {which}: its key type is not supported (RSA, EC, OKP)"))
                }
            };
            let algorithms = match jwk.common.key_algorithm {
                None => kind.to_vec(),
                Some(named) => {
                    let algorithm = key_algorithm(named)
                        .filter(|a| kind.contains(a))
                        .ok_or_else(|| format!("the JWK set's {which}: its alg {named:?} does not go with its key type"))?;
                    vec![algorithm]
                }
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("the JWK set's {which}: {e}"))?;
            keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithms });
        }
        Ok(Auth { keys, private: Vec::new(), audience: None })
    }

    /// These rooms open to tokens that grant them only.
    pub fn with_private_rooms(mut self, private: Vec<RoomPattern>) -> Auth {
        self.private = private;
        self
    }

    /// Tokens that carry `aud` must name this (`None`: tokens with `aud` are refused).
    pub fn with_audience(mut self, audience: Option<String>) -> Auth {
        self.audience = audience;
        self
    }

    /// Whether `room` is private.
    pub fn is_private(&self, room: &str) -> bool {
        self.private.iter().any(|pattern| pattern.matches(room))
    }

    /// The rooms that are private.
    pub fn private_rooms(&self) -> &[RoomPattern] {
        &self.private
    }

    /// Verifies `token` at `now_ms` (Unix milliseconds).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Grant, Refusal> {
        let bad = |why: String| Refusal::BadToken(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(format!("the token's header is not one c10k takes: {}", refused(&e))))?;
        // A secret has no key id, and takes a token with any (issuers often set one).
        let only_secret = || self.keys.first().filter(|k| self.keys.len() == 1 && k.kid.is_none());
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())).or_else(only_secret),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or_else(|| bad(format!("the token's key id {:?} names none of the server's keys", header.kid)))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(bad(format!("the token is signed with {:?}, which its key does not take", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = key.algorithms.clone();
        // `exp` and `nbf` are checked below, against the model's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| bad(refused(&e)))?.claims;
        let now_s = now_ms / 1000;
        if claims.exp <= now_s {
            return Err(bad(format!("the token expired at {} (now {now_s}); get a fresh one", claims.exp)));
        }
        if let Some(nbf) = claims.nbf {
            if now_s < nbf {
                return Err(bad(format!("the token is not valid before {nbf} (now {now_s})")));
            }
        }
        if claims.sub.is_empty() || claims.sub.chars().count() > super::MAX_NICK_CHARS || super::text::has_nul(&claims.sub) {
            return Err(bad("the token's 'sub' must be 1 to 64 characters".to_string()));
        }
        let name = match claims.name {
            Some(name) if name.chars().count() > super::MAX_NICK_CHARS || super::text::has_nul(&name) => {
                return Err(bad("the token's 'name' must be at most 64 characters".to_string()))
            }
            Some(name) if !name.trim().is_empty() => name,
            _ => claims.sub.clone(),
        };
        let mut rooms = Vec::with_capacity(claims.rooms.len());
        for (pattern, granted) in claims.rooms {
            let pattern = RoomPattern::parse(&pattern).map_err(|why| bad(format!("the token's rooms: {why}")))?;
            let mut permissions = Permissions::default();
            for permission in granted {
                match permission.as_str() {
                    "read" => permissions.read = true,
                    "post" => permissions.post = true,
                    other => {
                        return Err(bad(format!("the token's rooms: unknown permission '{other}' (read, post)")))
                    }
                }
            }
            rooms.push((pattern, permissions));
        }
        Ok(Grant { sub: claims.sub, name, expires_ms: claims.exp.saturating_mul(1000), rooms })
    }

    /// Whether the holder of `grant` (or nobody, `None`) may do `access` in `room`.
    pub fn permits(&self, grant: Option<&Grant>, room: &RoomId, access: Access) -> Result<(), Refusal> {
        if !self.is_private(room.as_str()) {
            return Ok(());
        }
        match grant {
            None => Err(Refusal::NoToken(format!(
                "room '{room}' is private: send a token that grants it (Authorization: Bearer, or ?access_token=)",
                room = room.as_str()
            ))),
            Some(grant) if grant.allows(room.as_str(), access) => Ok(()),
            Some(grant) => Err(Refusal::Forbidden(format!(
                "the token of '{}' does not let it {} in room '{}'",
                grant.sub,
                access.name(),
                room.as_str()
            ))),
        }
    }
}

/// The token `request` carries: `Authorization: Bearer` first, then `?access_token=`.
/// `Err` for an `Authorization` field of another scheme, which is a client's mistake worth
/// saying.
pub fn bearer_token(request: &Request) -> Result<Option<String>, Refusal> {
    if let Some(field) = request.headers.get("authorization") {
        let (scheme, token) = field.trim().split_once(' ').unwrap_or((field.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Refusal::BadToken("the Authorization field must be 'Bearer TOKEN'".to_string()));
        }
        return Ok(Some(token.trim().to_string()));
    }
    Ok(super::form::Args::query(request).get("access_token").filter(|t| !t.is_empty()).map(str::to_string))
}

/// Why the `jsonwebtoken` crate refused a token, in words for the client.
fn refused(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => "the token's signature does not match (made with another key?)".to_string(),
        ErrorKind::InvalidAudience => {
            "the token is for another audience ('aud'): this server takes tokens for --auth-audience only".to_string()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no '{claim}' claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's '{claim}' claim is not of its type"),
        ErrorKind::Json(e) => format!("the token's claims are not what c10k reads ({e}): see docs/protocol.md, \"Tokens\""),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "the token is not a JWT (three base64url parts joined by '.')".to_string()
        }
        _ => format!("the token does not verify ({error})"),
    }
}

fn key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// What a token minted by [`mint`] says.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// Who (`sub`).
    pub sub: String,
    /// The name its posts carry (`name`), if not `sub`.
    pub name: Option<String>,
    /// Room patterns and their permissions (`rooms`).
    pub rooms: BTreeMap<String, Vec<String>>,
    /// `exp`, Unix seconds.
    pub expires_s: u64,
    /// `aud`, if any.
    pub audience: Option<String>,
}

/// Signs `token` with HS256 under `secret`: what `c10k token` prints, for testing and for
/// an application server that hands its users tokens for c10k.
pub fn mint(secret: &[u8], token: &NewToken) -> Result<String, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!("the secret has {} bytes; it needs at least {MIN_SECRET_BYTES}", secret.len()));
    }
    for (pattern, permissions) in &token.rooms {
        RoomPattern::parse(pattern)?;
        if let Some(other) = permissions.iter().find(|p| !matches!(p.as_str(), "read" | "post")) {
            return Err(format!("unknown permission '{other}' for '{pattern}': give read, post or both"));
        }
    }
    let mut claims = serde_json::json!({ "sub": token.sub, "exp": token.expires_s, "rooms": token.rooms });
    if let Some(name) = &token.name {
        claims["name"] = name.as_str().into();
    }
    if let Some(audience) = &token.audience {
        claims["aud"] = audience.as_str().into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).map_err(|e| e.to_string())
}
