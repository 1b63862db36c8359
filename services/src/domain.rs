//! The pizza shop's domain, exactly as `docs/wire.md` fixes it: events, status codes and texts, the
//! menu, and the timing formulas. Pure: no I/O, no clock.

use std::fmt;

use md5::{Digest, Md5};

use crate::mutants::{self, ShopMutant};
use serde::{Deserialize, Serialize};

/// An order id: 8 lower-case hex characters, the last 8 of a random UUID's hex in the original.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    /// A fresh random id (OS randomness: production paths only; the simulation brings its own ids).
    pub fn random() -> OrderId {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).expect("the OS has randomness");
        OrderId::from_u32(u32::from_be_bytes(bytes))
    }

    /// The id whose hex is `n`, for callers with their own (seeded) randomness.
    pub fn from_u32(n: u32) -> OrderId {
        OrderId(format!("{n:08x}"))
    }

    /// The `n`-th of a run's ids: `n` through a bijection of u32 (spread like random ids), xor
    /// `salt`. Distinct for distinct `n`, unlike random 8-hex ids, which collide within ~100,000.
    pub fn nth(n: u32, salt: u32) -> OrderId {
        OrderId::from_u32(n.wrapping_mul(0x9E37_79B1) ^ salt)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() == 8
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(OrderId(s))
        } else {
            Err(format!("order id must be 8 lower-case hex characters, got {s:?}"))
        }
    }
}

impl std::str::FromStr for OrderId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderId::try_from(s.to_owned())
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The customer id for a username: 32 hex characters (the md5 of the trimmed username), so a
/// customer keeps the same id across sessions.
pub fn customer_id_for(username: &str) -> String {
    hex(&Md5::digest(username.trim().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The menu, configurable like the original's `[pizza]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Menu {
    pub sauces: Vec<String>,
    pub cheeses: Vec<String>,
    pub main_toppings: Vec<String>,
    pub extra_toppings: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for Menu {
    fn default() -> Self {
        Menu {
            sauces: strings(&[
                "Tomato",
                "Organic tomato",
                "Pesto",
                "Marinara",
                "Buffalo",
                "Hummus",
            ]),
            cheeses: strings(&[
                "Mozzarella",
                "Provolone",
                "Cheddar",
                "Ricotta",
                "Gouda",
                "Gruyere",
            ]),
            main_toppings: strings(&[
                "Pepperoni",
                "Sausage",
                "Chicken",
                "Pork",
                "Minced meat",
                "Vegan meat",
            ]),
            extra_toppings: strings(&[
                "Mushroom",
                "Onion",
                "Egg",
                "Ham",
                "Black olives",
                "Green pepper",
                "Fresh garlic",
            ]),
        }
    }
}

/// The longest username accepted, after trimming.
pub const USERNAME_MAX_CHARS: usize = 16;

/// Whether a username may contain `c`: printable text only. Control characters (newlines among
/// them), bidirectional overrides and isolates (which make a name display as another), zero-width
/// characters and line separators are refused.
fn username_char(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// Checks a username as every entry point must (login form, JSON login, order requests, a
/// session being read back): trimmed, non-empty, at most [`USERNAME_MAX_CHARS`] characters,
/// printable. Returns it trimmed.
pub fn valid_username(raw: &str) -> Result<String, InvalidField> {
    let bad = |message: String| InvalidField {
        field: "username",
        message,
    };
    let user = raw.trim();
    if user.is_empty() {
        return Err(bad("is required".into()));
    }
    if user.chars().count() > USERNAME_MAX_CHARS {
        return Err(bad(format!("at most {USERNAME_MAX_CHARS} characters")));
    }
    if let Some(c) = user.chars().find(|c| !username_char(*c)) {
        return Err(bad(format!(
            "printable characters only (not U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(user.to_owned())
}

/// What a customer asks for; validated against the menu by [`Menu::validate`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub username: String,
    pub sauce: String,
    pub cheese: String,
    pub main_topping: String,
    #[serde(default)]
    pub extra_toppings: Vec<String>,
}

/// A field of an order request that the menu does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    /// The form field, as named in the request.
    pub field: &'static str,
    pub message: String,
}

impl Menu {
    /// Checks every field of a request; the first bad one is named.
    pub fn validate(&self, req: &OrderRequest) -> Result<(), InvalidField> {
        let bad = |field, message: String| Err(InvalidField { field, message });
        valid_username(&req.username)?;
        for (field, value, allowed) in [
            ("sauce", &req.sauce, &self.sauces),
            ("cheese", &req.cheese, &self.cheeses),
            ("main_topping", &req.main_topping, &self.main_toppings),
        ] {
            if value.is_empty() {
                return bad(field, "is required".into());
            }
            if !allowed.contains(value) {
                return bad(field, format!("{value:?} is not on the menu"));
            }
        }
        for (i, extra) in req.extra_toppings.iter().enumerate() {
            if !self.extra_toppings.contains(extra) {
                return bad("extra_toppings", format!("{extra:?} is not on the menu"));
            }
            if req.extra_toppings[..i].contains(extra) {
                return bad("extra_toppings", format!("{extra:?} is listed twice"));
            }
        }
        Ok(())
    }
}

/// The `order` object of a pizza-ordered event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub extra_toppings: Vec<String>,
    pub sauce: String,
    pub cheese: String,
    pub main_topping: String,
    pub customer_id: String,
    pub username: String,
}

/// pizza-ordered: `{"status":100,"timestamp":ms,"order":{...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ordered {
    #[serde(default = "Ordered::default_status")]
    pub status: i64,
    /// Absent in the older form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    pub order: Order,
}

impl Ordered {
    fn default_status() -> i64 {
        100
    }
}

/// pizza-assembled: `{"status":200,"baking_time":int,"timestamp":ms}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assembled {
    #[serde(default = "Assembled::default_status")]
    pub status: i64,
    pub baking_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

impl Assembled {
    fn default_status() -> i64 {
        200
    }
}

/// pizza-baked, pizza-delivered, pizza-pending: `{"status":N,"timestamp":ms}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusOnly {
    pub status: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
}

/// pizza-status: `{"STATUS":int,"TIMESTAMP":ms}` as ksqlDB writes it (lower case accepted).
///
/// *Ours*: a stuck mark (status 50) carries `OBSERVED_STATUS`, the status the watchdog saw, so the
/// fold can ignore a mark that raced with progress. Readers that do not know it ignore it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    #[serde(rename = "STATUS", alias = "status")]
    pub status: i64,
    #[serde(
        rename = "TIMESTAMP",
        alias = "timestamp",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
    #[serde(rename = "OBSERVED_STATUS", default, skip_serializing_if = "Option::is_none")]
    pub observed_status: Option<i64>,
}

/// An event that cannot be used (the worker's, which dead-letters it with this reason).
pub use crate::error::Malformed;

/// Parses an event's JSON; unknown extra fields are ignored, a wrong or missing field is
/// [`Malformed`], and so is a value that is not UTF-8 anywhere (serde_json does not look inside
/// the strings of fields it skips; the spec says UTF-8 JSON).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Malformed> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| Malformed(format!("invalid event JSON: not UTF-8 ({e})")))?;
    serde_json::from_str(text).map_err(|e| Malformed(format!("invalid event JSON: {e}")))
}

/// Parses a pizza-baked value, which the older form leaves empty.
pub fn decode_baked(payload: &[u8]) -> Result<Option<StatusOnly>, Malformed> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        decode(payload).map(Some)
    }
}

/// An event as JSON bytes (compact, field order as in the spec).
pub fn encode<T: Serialize>(event: &T) -> Vec<u8> {
    serde_json::to_vec(event).expect("events serialize")
}

/// The seed the original derives cooking times from:
/// `int(last 4 hex digits of md5("{sauce}@{cheese}@{extras joined by ','}@{main_topping}"), 16)`.
pub fn recipe_seed(sauce: &str, cheese: &str, extras: &[String], main_topping: &str) -> u32 {
    let text = format!("{sauce}@{cheese}@{}@{main_topping}", extras.join(","));
    let digest = Md5::digest(text.as_bytes());
    u32::from(u16::from_be_bytes([digest[14], digest[15]]))
}

/// Seconds to assemble an order.
pub fn assemble_secs(seed: u32) -> i64 {
    i64::from(seed % 8 + 4)
}

/// Seconds to bake an order (sent on pizza-assembled as `baking_time`).
pub fn bake_secs(seed: u32) -> i64 {
    i64::from(seed % 8 + 8)
}

/// Seconds to deliver: `factor × (int(customer_id, 16) % 10 + 5)`, factor 2 for a pending order.
///
/// A customer id that is not hex counts as 0 (the original would crash; the order still gets delivered).
pub fn delivery_secs(customer_id: &str, pending: bool) -> i64 {
    let factor = if pending { 2 } else { 1 };
    factor * (hex_mod10(customer_id) + 5)
}

/// `int(s, 16) % 10` for hex strings of any length, without overflow.
fn hex_mod10(s: &str) -> i64 {
    let mut r: i64 = 0;
    for c in s.chars() {
        match c.to_digit(16) {
            Some(d) => r = (r * 16 + i64::from(d)) % 10,
            None => return 0,
        }
    }
    r
}

/// Status codes, configurable like the original's `[status-id]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusCodes {
    pub stuck: i64,
    pub order_received: i64,
    pub pending: i64,
    pub in_the_oven: i64,
    pub out_for_delivery: i64,
    pub delivered: i64,
    pub unknown: i64,
    pub something_wrong: i64,
    pub cancelled: i64,
}

impl Default for StatusCodes {
    fn default() -> Self {
        StatusCodes {
            stuck: 50,
            order_received: 100,
            pending: 150,
            in_the_oven: 200,
            out_for_delivery: 300,
            delivered: 999,
            unknown: 410,
            something_wrong: 430,
            cancelled: 499,
        }
    }
}

/// Where a status code stands in an order's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Progress, in order: received < pending < in the oven < out for delivery.
    Progress(u8),
    /// Delivered, cancelled, something wrong, unknown order: nothing moves the order after these.
    Final,
}

impl StatusCodes {
    /// The rank of a code; `None` for the stuck flag and for codes the shop does not know.
    pub fn rank(&self, code: i64) -> Option<Rank> {
        if code == self.stuck {
            None
        } else if code == self.order_received {
            Some(Rank::Progress(1))
        } else if code == self.pending {
            Some(Rank::Progress(2))
        } else if code == self.in_the_oven {
            Some(Rank::Progress(if mutants::on(ShopMutant::OvenOutranksBaked) {
                4
            } else {
                3
            }))
        } else if code == self.out_for_delivery {
            Some(Rank::Progress(if mutants::on(ShopMutant::OvenOutranksBaked) {
                3
            } else {
                4
            }))
        } else if [self.delivered, self.cancelled, self.something_wrong, self.unknown].contains(&code) {
            Some(Rank::Final)
        } else {
            None
        }
    }

    /// Whether nothing can change an order at this status.
    pub fn is_final(&self, code: i64) -> bool {
        self.rank(code) == Some(Rank::Final)
    }
}

/// Customer-facing texts, configurable like the original's `[status-label]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusLabels {
    pub stuck: String,
    pub order_received: String,
    pub pending: String,
    pub in_the_oven: String,
    pub out_for_delivery: String,
    pub delivered: String,
    pub unknown: String,
    pub something_wrong: String,
    pub cancelled: String,
    /// Prefix for a code the shop does not know; the code follows in parentheses.
    pub other: String,
}

impl Default for StatusLabels {
    fn default() -> Self {
        StatusLabels {
            stuck: "Your order is delayed, bear with us!".into(),
            order_received: "Order received and being prepared".into(),
            pending: "We are checking your order".into(),
            in_the_oven: "Your pizza is in the oven".into(),
            out_for_delivery: "Your pizza is out for delivery".into(),
            delivered: "Your pizza was delivered".into(),
            unknown: "Oops! Unknown order".into(),
            something_wrong: "Oops! Something went wrong, we will refund your order".into(),
            cancelled: "Order has been cancelled".into(),
            other: "Oops! Unknown status".into(),
        }
    }
}

impl StatusLabels {
    /// The customer-facing text of a code.
    pub fn text(&self, codes: &StatusCodes, code: i64) -> String {
        let pairs = [
            (codes.stuck, &self.stuck),
            (codes.order_received, &self.order_received),
            (codes.pending, &self.pending),
            (codes.in_the_oven, &self.in_the_oven),
            (codes.out_for_delivery, &self.out_for_delivery),
            (codes.delivered, &self.delivered),
            (codes.unknown, &self.unknown),
            (codes.something_wrong, &self.something_wrong),
            (codes.cancelled, &self.cancelled),
        ];
        match pairs.iter().find(|(c, _)| *c == code) {
            Some((_, text)) => (*text).clone(),
            None => format!("{} ({code})", self.other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_test_vector() {
        let extras = strings(&["Mushroom", "Onion"]);
        let seed = recipe_seed("Tomato", "Mozzarella", &extras, "Pepperoni");
        assert_eq!(seed, 33980);
        assert_eq!(assemble_secs(seed), 8);
        assert_eq!(bake_secs(seed), 12);
    }

    #[test]
    fn delivery_time_follows_the_customer_id() {
        // 0x...0f = 15 -> 15 % 10 = 5 -> 10 s; doubled when pending.
        assert_eq!(delivery_secs("0000000000000000000000000000000f", false), 10);
        assert_eq!(delivery_secs("0000000000000000000000000000000f", true), 20);
        let big = "ffffffffffffffffffffffffffffffff";
        // 2^128 - 1 = 340282366920938463463374607431768211455 -> ends in 5.
        assert_eq!(delivery_secs(big, false), 10);
        assert_eq!(delivery_secs("not hex", false), 5);
        assert_eq!(customer_id_for(" alice ").len(), 32);
        assert_eq!(customer_id_for(" alice "), customer_id_for("alice"));
    }

    #[test]
    fn events_encode_as_the_spec_shows() {
        let ev = Assembled {
            status: 200,
            baking_time: 12,
            timestamp: Some(1_700_000_000_000),
        };
        assert_eq!(
            encode(&ev),
            br#"{"status":200,"baking_time":12,"timestamp":1700000000000}"#
        );
        let ev = StatusEvent {
            status: 300,
            timestamp: Some(5),
            observed_status: None,
        };
        assert_eq!(encode(&ev), br#"{"STATUS":300,"TIMESTAMP":5}"#);
    }

    #[test]
    fn older_and_python_forms_are_accepted() {
        // Python's json.dumps puts spaces after separators; extra fields must be ignored.
        let ordered: Ordered = decode(
            br#"{"status": 100, "timestamp": 1, "extra": true, "order": {"extra_toppings": [], "sauce": "Pesto", "cheese": "Gouda", "main_topping": "Pork", "customer_id": "ab", "username": "bob"}}"#,
        )
        .unwrap();
        assert_eq!(ordered.order.sauce, "Pesto");
        let s: StatusOnly = decode(br#"{"status": 300}"#).unwrap();
        assert_eq!(s.timestamp, None);
        assert_eq!(decode_baked(b"").unwrap(), None);
        let st: StatusEvent = decode(br#"{"status": 200}"#).unwrap();
        assert_eq!(st.status, 200);
        assert!(decode::<Assembled>(br#"{"status":200}"#)
            .unwrap_err()
            .0
            .contains("baking_time"));
        assert!(decode::<Ordered>(b"not json").is_err());
    }

    #[test]
    fn menu_validation_names_the_field() {
        let menu = Menu::default();
        let mut req = OrderRequest {
            username: "  alice  ".into(),
            sauce: "Tomato".into(),
            cheese: "Gouda".into(),
            main_topping: "Pork".into(),
            extra_toppings: strings(&["Egg"]),
        };
        assert_eq!(menu.validate(&req), Ok(()));
        req.sauce = "Ketchup".into();
        assert_eq!(menu.validate(&req).unwrap_err().field, "sauce");
        req.sauce = "Tomato".into();
        req.username = "x".repeat(17);
        assert_eq!(menu.validate(&req).unwrap_err().field, "username");
        for bad in [
            "a\nb",
            "x\u{202e}gnp.exe",
            "tab\there",
            "zero\u{200b}width",
            "nul\0",
        ] {
            req.username = bad.into();
            let err = menu.validate(&req).unwrap_err();
            assert_eq!(err.field, "username", "{bad:?}");
            assert!(err.message.starts_with("printable characters only"), "{err}");
        }
        req.username = "Zoë 🍕".into();
        assert_eq!(menu.validate(&req), Ok(()));
        req.username = "bob".into();
        req.extra_toppings = strings(&["Egg", "Egg"]);
        assert_eq!(menu.validate(&req).unwrap_err().field, "extra_toppings");
    }

    #[test]
    fn ranks_and_labels() {
        let c = StatusCodes::default();
        assert!(c.rank(100) < c.rank(150));
        assert!(c.rank(150) < c.rank(200));
        assert!(c.rank(300) < c.rank(999));
        assert_eq!(c.rank(50), None);
        assert!(c.is_final(499) && c.is_final(430) && c.is_final(410));
        let l = StatusLabels::default();
        assert_eq!(l.text(&c, 999), "Your pizza was delivered");
        assert_eq!(l.text(&c, 7), "Oops! Unknown status (7)");
        assert!(OrderId::try_from("ABCDEF12".to_owned()).is_err());
        assert_eq!(OrderId::from_u32(0xab).as_str(), "000000ab");
    }
}
