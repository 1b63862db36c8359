//! Sessions in a signed cookie: who is logged in, the CSRF token their forms carry, and the orders
//! they placed that the view may not show yet. Signed with HMAC-SHA256 under a key generated per
//! installation (or configured), never one written in the code.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie's name.
pub const COOKIE: &str = "pizza_session";
/// Orders remembered in the session until the view has them.
const RECENT_ORDERS: usize = 5;

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("session key file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("session key file {0}: expected 64 hex characters (32 bytes)")]
    Format(String),
}

impl SessionKey {
    /// A fresh random key.
    pub fn random() -> SessionKey {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS has randomness");
        SessionKey(k)
    }

    /// A key from 64 hex characters (e.g. `PIZZA_SESSION_KEY`).
    pub fn from_hex(text: &str) -> Option<SessionKey> {
        let bytes = unhex(text.trim())?;
        <[u8; 32]>::try_from(bytes).ok().map(SessionKey)
    }

    /// Reads the installation's key from `path`, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<SessionKey, KeyError> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => SessionKey::from_hex(&text).ok_or(KeyError::Format(name)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SessionKey::random();
                write_private(path, &hex(&key.0)).map_err(|e| KeyError::Io(name, e))?;
                Ok(key)
            }
            Err(e) => Err(KeyError::Io(name, e)),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

/// What a session holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Trimmed username; `None` before login.
    pub username: Option<String>,
    /// Every form must send this back.
    pub csrf: String,
    /// Orders this session placed, newest first, so their page works before the view has them.
    pub recent: Vec<String>,
}

impl Session {
    /// A session for a visitor who has not logged in.
    pub fn anonymous() -> Session {
        Session {
            username: None,
            csrf: random_token(),
            recent: Vec::new(),
        }
    }

    /// A session for `username`, with a new CSRF token (a login changes it).
    pub fn logged_in(username: &str) -> Session {
        Session {
            username: Some(username.to_owned()),
            csrf: random_token(),
            recent: Vec::new(),
        }
    }

    /// Remembers a placed order.
    pub fn placed(&mut self, order_id: &str) {
        self.recent.retain(|o| o != order_id);
        self.recent.insert(0, order_id.to_owned());
        self.recent.truncate(RECENT_ORDERS);
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The signed cookie value: hex(payload) "." hex(HMAC).
    pub fn encode(&self, key: &SessionKey) -> String {
        let payload = format!(
            "{}\n{}\n{}",
            self.username.as_deref().unwrap_or(""),
            self.csrf,
            self.recent.join(",")
        );
        let tag = key.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", hex(payload.as_bytes()), hex(&tag))
    }

    /// A session from a cookie value; `None` if it was not signed with `key` or is malformed.
    pub fn decode(value: &str, key: &SessionKey) -> Option<Session> {
        let (payload_hex, tag_hex) = value.split_once('.')?;
        let payload = unhex(payload_hex)?;
        key.mac(&payload).verify_slice(&unhex(tag_hex)?).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.splitn(3, '\n');
        let username = parts.next()?;
        let csrf = parts.next()?.to_owned();
        let recent = parts
            .next()?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let username = (!username.is_empty()).then(|| username.to_owned());
        Some(Session {
            username,
            csrf,
            recent,
        })
    }

    /// The `Set-Cookie` header value for this session.
    pub fn set_cookie(&self, key: &SessionKey) -> String {
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", self.encode(key))
    }
}

/// The `Set-Cookie` value that removes the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session cookie's value from a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .map(str::trim)
        .find_map(|c| c.strip_prefix(COOKIE)?.strip_prefix('='))
}

fn random_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS has randomness");
    hex(&b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_and_a_forged_one_does_not() {
        let key = SessionKey::random();
        let mut s = Session::logged_in("alice");
        s.placed("0000abcd");
        let v = s.encode(&key);
        assert_eq!(Session::decode(&v, &key), Some(s.clone()));
        // Another installation's key, or a payload changed to another user, is rejected.
        assert_eq!(Session::decode(&v, &SessionKey::random()), None);
        let forged = Session {
            username: Some("mallory".into()),
            ..s.clone()
        }
        .encode(&SessionKey::random());
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, tag) = v.split_once('.').unwrap();
        assert_eq!(Session::decode(&format!("{payload}.{tag}"), &key), None);
        assert_eq!(Session::decode("garbage", &key), None);
    }

    #[test]
    fn csrf_and_cookies() {
        let s = Session::anonymous();
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches("nope"));
        assert_eq!(cookie_value("a=1; pizza_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("a=1"), None);
    }

    #[test]
    fn the_key_file_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("session.key");
        let a = SessionKey::load_or_create(&p).unwrap();
        let b = SessionKey::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        std::fs::write(&p, "short").unwrap();
        assert!(SessionKey::load_or_create(&p).is_err());
    }
}
