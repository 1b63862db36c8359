//! Sessions in a signed cookie: who is logged in, the CSRF token their forms carry, the orders
//! they placed that the view may not show yet, and when the session began. Signed with
//! HMAC-SHA256 under a key generated per installation (or configured), never one written in the
//! code. The payload is JSON, so no field can spill into another whatever a username holds; every
//! field is checked again when the cookie is read back; a session lasts [`SESSION_MAX_AGE`] from
//! its login, whatever is done with the cookie (logging out only drops it from the browser).

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::now_ms;
use crate::domain::{OrderId, OrderRequest};

/// The cookie's name.
pub const COOKIE: &str = "pizza_session";
/// Orders remembered in the session until the view has them.
const RECENT_ORDERS: usize = 5;
/// How long a session lasts from its login (or from the first page, before one).
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(8 * 60 * 60);
/// How far in the future a session's start may be (clocks of several web instances differ).
const CLOCK_SKEW_MS: i64 = 60_000;

/// The key sessions are signed with.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

/// The key's bytes never reach a log.
impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// The key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("session key file {0}")]
    Io(String, #[source] std::io::Error),
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
    ///
    /// The file is written whole or not at all (a temporary file, synced, then linked into place,
    /// the directory synced), so a crash cannot leave a short key behind; when two web apps start
    /// at once on one data directory, the first key in place wins and both use it. A file that is
    /// empty or a strict prefix of a key (what an interrupted write by an earlier version leaves:
    /// no session was ever signed with it) is replaced by a new key, with a warning; any other
    /// content is an error naming the file.
    pub fn load_or_create(path: &Path) -> Result<SessionKey, KeyError> {
        let name = path.display().to_string();
        let io = |e| KeyError::Io(name.clone(), e);
        // Twice at most: once to find no key and place ours, once to read the one that won.
        for _ in 0..2 {
            match std::fs::read_to_string(path) {
                Ok(text) => match SessionKey::from_hex(&text) {
                    Some(key) => return Ok(key),
                    None if interrupted_write(&text) => {
                        tracing::warn!(file = %name, bytes = text.len(), "session key file is incomplete (a crash while it was first written); making a new key");
                        let key = SessionKey::random();
                        write_private_atomically(path, hex(&key.0).as_bytes(), Place::Replace).map_err(io)?;
                        return Ok(key);
                    }
                    None => return Err(KeyError::Format(name)),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let key = SessionKey::random();
                    match write_private_atomically(path, hex(&key.0).as_bytes(), Place::New) {
                        Ok(()) => return Ok(key),
                        // Another instance placed its key first: use that one.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(io(e)),
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(KeyError::Format(name))
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }
}

/// What an interrupted write of a key leaves: nothing, or the start of 64 hex characters.
fn interrupted_write(text: &str) -> bool {
    text.len() < 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How [`write_private_atomically`] puts its file in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Only where there is no file yet (else `AlreadyExists`).
    New,
    /// Over whatever is there.
    Replace,
}

/// Writes `bytes` to `path` (mode 0600) so that `path` holds either nothing or all of them, also
/// across a crash or a power loss: a temporary file beside it, synced, then linked (`New`) or
/// renamed (`Replace`) into place, and the directory synced so that is durable too.
pub fn write_private_atomically(path: &Path, bytes: &[u8], place: Place) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name no other writer uses: not even another process with our pid (in another container).
    let tmp = dir.join(format!(".{file_name}.tmp-{}", random_token()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match place {
            Place::New => std::fs::hard_link(&tmp, path)?,
            Place::Replace => std::fs::rename(&tmp, path)?,
        }
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

/// What a session holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Trimmed username; `None` before login.
    pub username: Option<String>,
    /// Who the customer is: drawn at random for each login (32 hex characters, as the original
    /// shop's `uuid4().hex`), and signed with the rest. A name is not an identity: anyone may
    /// type any name, but only this session holds this id, so only it sees and places its
    /// orders. `None` before login.
    pub customer_id: Option<String>,
    /// Every form must send this back.
    pub csrf: String,
    /// Orders this session placed, newest first, so their page works before the view has them.
    pub recent: Vec<OrderId>,
    /// When the session began (epoch ms): it lasts [`SESSION_MAX_AGE`] from then.
    pub issued_ms: i64,
    /// The orders this session was told are being confirmed (the produce may or may not have
    /// written them), among the recent ones: exactly what to send again to confirm each. Signed
    /// like the rest, so a confirmation sends what was first sent and nothing a client chose.
    pub unconfirmed: Vec<Unconfirmed>,
}

/// An order being confirmed: its id, the time its event carries, and the customer's choices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconfirmed {
    #[serde(rename = "i")]
    pub order_id: OrderId,
    #[serde(rename = "t")]
    pub ordered_at_ms: i64,
    #[serde(rename = "s")]
    pub sauce: String,
    #[serde(rename = "c")]
    pub cheese: String,
    #[serde(rename = "m")]
    pub main_topping: String,
    #[serde(rename = "x")]
    pub extra_toppings: Vec<String>,
}

impl Unconfirmed {
    /// The order `username` asked for, as it was first sent.
    pub fn request(&self, username: &str) -> OrderRequest {
        OrderRequest {
            username: username.to_owned(),
            sauce: self.sauce.clone(),
            cheese: self.cheese.clone(),
            main_topping: self.main_topping.clone(),
            extra_toppings: self.extra_toppings.clone(),
        }
    }

    /// What a session keeps of a request answered "being confirmed".
    pub fn of(order_id: &OrderId, ordered_at_ms: i64, req: &OrderRequest) -> Unconfirmed {
        Unconfirmed {
            order_id: order_id.clone(),
            ordered_at_ms,
            sauce: req.sauce.clone(),
            cheese: req.cheese.clone(),
            main_topping: req.main_topping.clone(),
            extra_toppings: req.extra_toppings.clone(),
        }
    }
}

/// The signed payload, as JSON. Short names keep the cookie small; `v` lets a later format refuse
/// this one instead of misreading it.
#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    u: Option<String>,
    /// The customer id (`None` before login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<String>,
    c: String,
    r: Vec<OrderId>,
    t: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    p: Vec<Unconfirmed>,
}

/// 2 since a login draws its customer id (issue 25, defect 7): a session of version 1 knew its
/// customer by name, and is refused (its user logs in again).
const PAYLOAD_VERSION: u8 = 2;

impl Session {
    /// A session for a visitor who has not logged in.
    pub fn anonymous() -> Session {
        Session {
            username: None,
            customer_id: None,
            csrf: random_token(),
            recent: Vec::new(),
            issued_ms: now_ms(),
            unconfirmed: Vec::new(),
        }
    }

    /// A session for `username`, with a new CSRF token (a login changes it) and a new customer id.
    pub fn logged_in(username: &str) -> Session {
        Session {
            username: Some(username.to_owned()),
            customer_id: Some(random_token()),
            csrf: random_token(),
            recent: Vec::new(),
            issued_ms: now_ms(),
            unconfirmed: Vec::new(),
        }
    }

    /// Remembers a placed order.
    pub fn placed(&mut self, order_id: &OrderId) {
        self.recent.retain(|o| o != order_id);
        self.recent.insert(0, order_id.clone());
        self.recent.truncate(RECENT_ORDERS);
        // An order being confirmed is one of the recent ones, or forgotten with them.
        let recent = &self.recent;
        self.unconfirmed.retain(|u| recent.contains(&u.order_id));
    }

    /// Remembers an order answered "being confirmed" (it is among the recent ones too, so its page
    /// works, and forgotten with them).
    pub fn being_confirmed(&mut self, unconfirmed: Unconfirmed) {
        self.unconfirmed.retain(|u| u.order_id != unconfirmed.order_id);
        self.unconfirmed.push(unconfirmed);
        let id = self.unconfirmed.last().expect("pushed").order_id.clone();
        self.placed(&id);
    }

    /// The order `order_id` if this session is confirming it.
    pub fn confirming(&self, order_id: &str) -> Option<&Unconfirmed> {
        self.unconfirmed.iter().find(|u| u.order_id.as_str() == order_id)
    }

    /// Forgets that `order_id` is being confirmed (it is confirmed).
    pub fn confirmed(&mut self, order_id: &str) {
        self.unconfirmed.retain(|u| u.order_id.as_str() != order_id);
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The signed cookie value: hex(JSON payload) "." hex(HMAC).
    pub fn encode(&self, key: &SessionKey) -> String {
        let payload = serde_json::to_vec(&Payload {
            v: PAYLOAD_VERSION,
            u: self.username.clone(),
            k: self.customer_id.clone(),
            c: self.csrf.clone(),
            r: self.recent.clone(),
            t: self.issued_ms,
            p: self.unconfirmed.clone(),
        })
        .expect("a session serializes");
        let tag = key.mac(&payload).finalize().into_bytes();
        format!("{}.{}", hex(&payload), hex(&tag))
    }

    /// A session from a cookie value; `None` if it was not signed with `key`, is malformed, holds
    /// a field no login could have made, or is older than [`SESSION_MAX_AGE`].
    pub fn decode(value: &str, key: &SessionKey) -> Option<Session> {
        Session::decode_at(value, key, now_ms())
    }

    /// [`Session::decode`] at time `now_ms`.
    pub fn decode_at(value: &str, key: &SessionKey, now_ms: i64) -> Option<Session> {
        let (payload_hex, tag_hex) = value.split_once('.')?;
        let payload = unhex(payload_hex)?;
        key.mac(&payload).verify_slice(&unhex(tag_hex)?).ok()?;
        let p: Payload = serde_json::from_slice(&payload).ok()?;
        let age = now_ms - p.t;
        let fresh = p.v == PAYLOAD_VERSION
            && age <= SESSION_MAX_AGE.as_millis() as i64
            && age >= -CLOCK_SKEW_MS
            && token_like(&p.c)
            && p.k
                .as_deref()
                .map_or(p.u.is_none(), |k| p.u.is_some() && token_like(k))
            && p.r.len() <= RECENT_ORDERS
            && p.p.iter().all(|u| p.r.contains(&u.order_id))
            && p.p.len() <= RECENT_ORDERS
            && p.u
                .as_deref()
                .is_none_or(|u| crate::domain::valid_username(u).as_deref() == Ok(u));
        fresh.then_some(Session {
            username: p.u,
            customer_id: p.k,
            csrf: p.c,
            recent: p.r,
            issued_ms: p.t,
            unconfirmed: p.p,
        })
    }

    /// The `Set-Cookie` header value for this session; the browser drops it when the session ends.
    pub fn set_cookie(&self, key: &SessionKey) -> String {
        let left_ms = SESSION_MAX_AGE.as_millis() as i64 - (now_ms() - self.issued_ms);
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            self.encode(key),
            (left_ms / 1000).max(0)
        )
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

/// Whether `s` is what [`random_token`] makes: 32 hex characters.
fn token_like(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
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
        s.placed(&OrderId::from_u32(0xabcd));
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
        // Each login is a customer of its own, whatever the name; a logged-in session without
        // one, or an anonymous one with one, is no session this app made.
        let again = Session::logged_in("alice");
        assert!(token_like(again.customer_id.as_deref().unwrap()));
        assert_ne!(again.customer_id, s.customer_id);
        for odd in [
            Session {
                customer_id: None,
                ..s.clone()
            },
            Session {
                customer_id: Some("alice".into()),
                ..s.clone()
            },
            Session {
                customer_id: s.customer_id.clone(),
                ..Session::anonymous()
            },
        ] {
            assert_eq!(Session::decode(&odd.encode(&key), &key), None, "{odd:?}");
        }
    }

    #[test]
    fn an_order_being_confirmed_rides_in_the_signed_session_until_it_is_forgotten() {
        let key = SessionKey::random();
        let mut s = Session::logged_in("alice");
        let req = OrderRequest {
            username: "alice".into(),
            sauce: "Tomato".into(),
            cheese: "Gouda".into(),
            main_topping: "Pork".into(),
            extra_toppings: vec!["Egg".into()],
        };
        let id = OrderId::from_u32(0x1234);
        s.being_confirmed(Unconfirmed::of(&id, 1_700_000_000_000, &req));
        let back = Session::decode(&s.encode(&key), &key).expect("a valid session");
        let u = back.confirming(id.as_str()).expect("still being confirmed");
        assert_eq!(
            (u.request("alice"), u.ordered_at_ms),
            (req.clone(), 1_700_000_000_000)
        );
        assert!(back.confirming("00000001").is_none());
        // A second one does not push the first out: each is confirmed on its own.
        let mut two = back.clone();
        let other = OrderId::from_u32(0x5678);
        two.being_confirmed(Unconfirmed::of(&other, 1_700_000_001_000, &req));
        let two = Session::decode(&two.encode(&key), &key).expect("a valid session");
        assert!(two.confirming(id.as_str()).is_some() && two.confirming(other.as_str()).is_some());
        let mut one = two.clone();
        one.confirmed(id.as_str());
        assert!(one.confirming(id.as_str()).is_none() && one.confirming(other.as_str()).is_some());
        // Five newer orders push it out of the recent ones: it is forgotten with them.
        let mut s = back;
        for n in 0..RECENT_ORDERS as u32 {
            s.placed(&OrderId::from_u32(n));
        }
        assert!(s.unconfirmed.is_empty());
        assert!(Session::decode(&s.encode(&key), &key).is_some());
    }

    /// The old payload joined username, token and orders with newlines, so a username holding a
    /// newline chose the session's token and its "recent orders". Whatever a username holds, each
    /// field stays itself.
    #[test]
    fn a_username_cannot_spill_into_other_fields() {
        let key = SessionKey::random();
        let s = Session {
            username: Some("eve\nffffffffffffffffffffffffffffffff\n0000dead".into()),
            ..Session::logged_in("x")
        };
        let back = Session::decode_at(&s.encode(&key), &key, s.issued_ms);
        // Such a name could not have logged in, so the session it is in is no session.
        assert_eq!(back, None);
        let s = Session::logged_in("eve,0000dead");
        let back = Session::decode(&s.encode(&key), &key).unwrap();
        assert_eq!(back.username.as_deref(), Some("eve,0000dead"));
        assert!(back.recent.is_empty());
        assert_eq!(back.csrf, s.csrf);
    }

    #[test]
    fn a_session_ends_after_its_age_limit() {
        let key = SessionKey::random();
        let s = Session::logged_in("alice");
        let v = s.encode(&key);
        let max = SESSION_MAX_AGE.as_millis() as i64;
        assert!(Session::decode_at(&v, &key, s.issued_ms + max).is_some());
        assert_eq!(Session::decode_at(&v, &key, s.issued_ms + max + 1), None);
        assert_eq!(
            Session::decode_at(&v, &key, s.issued_ms - 2 * CLOCK_SKEW_MS),
            None
        );
        let cookie = s.set_cookie(&key);
        let age: i64 = cookie.rsplit_once("Max-Age=").unwrap().1.parse().unwrap();
        assert!((max / 1000 - 5..=max / 1000).contains(&age), "{cookie}");
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::write(&p, "not a key at all").unwrap();
        let err = SessionKey::load_or_create(&p).unwrap_err().to_string();
        assert!(err.contains("session.key") && err.contains("64 hex"), "{err}");
    }

    /// What a crash during the first start left with the earlier `create_new` + `write_all`: the
    /// file, empty or cut short. That stopped the web app from ever starting again.
    #[test]
    fn two_instances_starting_together_use_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("session.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let run = || s.spawn(|| SessionKey::load_or_create(&p).unwrap().0);
            let handles: Vec<_> = (0..8).map(|_| run()).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "every instance signs with the key on disk"
        );
        assert_eq!(SessionKey::load_or_create(&p).unwrap().0, keys[0]);
    }

    #[test]
    fn a_key_file_cut_short_by_a_crash_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("session.key");
        for left in ["", "0123abcd"] {
            std::fs::write(&p, left).unwrap();
            let key = SessionKey::load_or_create(&p).unwrap();
            assert_eq!(SessionKey::load_or_create(&p).unwrap().0, key.0);
            assert_eq!(std::fs::read_to_string(&p).unwrap().len(), 64);
        }
    }
}
