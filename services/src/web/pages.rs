//! The customer's pages, rendered as plain HTML. Pure functions of their data (snapshot-tested);
//! every value that came from outside passes through [`esc`]. No inline script: the live status
//! script is a static file, so the Content-Security-Policy can forbid inline code.

use std::fmt::Write;

use crate::domain::Menu;
use crate::web::api::OrderBody;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// `YYYY-MM-DD HH:MM:SS UTC` for epoch milliseconds.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Who is looking, for the navigation bar.
pub struct Viewer<'a> {
    pub username: Option<&'a str>,
    pub csrf: &'a str,
}

fn layout(title: &str, viewer: &Viewer<'_>, body: &str) -> String {
    let nav = match viewer.username {
        Some(u) => format!(
            r#"<nav><span>Logged in as <b>{}</b></span> <a href="/menu">Menu</a> <a href="/orders">My orders</a>
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button>Log out</button></form></nav>"#,
            esc(u),
            esc(viewer.csrf)
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Pizza shop</title><link rel="stylesheet" href="/static/app.css"></head>
<body><header><a href="/" class="brand">Pizza shop</a>{nav}</header>
<main>{body}</main></body></html>
"#,
        esc(title)
    )
}

fn error_box(error: Option<&str>) -> String {
    error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default()
}

/// The login page.
pub fn login(csrf: &str, error: Option<&str>) -> String {
    let body = format!(
        r#"<h1>Welcome</h1>{}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{}">
<label>Username <input name="username" maxlength="16" required autofocus></label>
<button type="submit">Log in</button>
</form>"#,
        error_box(error),
        esc(csrf)
    );
    layout("Log in", &Viewer { username: None, csrf }, &body)
}

fn choices(out: &mut String, legend: &str, name: &str, items: &[String], kind: &str) {
    let _ = write!(out, "<fieldset><legend>{}</legend>", esc(legend));
    for (i, item) in items.iter().enumerate() {
        let required = if kind == "radio" && i == 0 {
            " required"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<label><input type="{kind}" name="{name}" value="{v}"{required}> {v}</label>"#,
            v = esc(item)
        );
    }
    out.push_str("</fieldset>");
}

/// The menu, with the order form.
pub fn menu(viewer: &Viewer<'_>, menu: &Menu, error: Option<&str>) -> String {
    let mut form = String::new();
    choices(&mut form, "Sauce", "sauce", &menu.sauces, "radio");
    choices(&mut form, "Cheese", "cheese", &menu.cheeses, "radio");
    choices(
        &mut form,
        "Main topping",
        "main_topping",
        &menu.main_toppings,
        "radio",
    );
    choices(
        &mut form,
        "Extra toppings",
        "extra_toppings",
        &menu.extra_toppings,
        "checkbox",
    );
    let body = format!(
        r#"<h1>Build your pizza</h1>{}
<form method="post" action="/orders" id="order-form">
<input type="hidden" name="csrf" value="{}">{form}
<button type="submit">Order</button>
</form>"#,
        error_box(error),
        esc(viewer.csrf)
    );
    layout("Menu", viewer, &body)
}

fn timeline(out: &mut String, order: &OrderBody) {
    out.push_str(r#"<ol id="timeline">"#);
    for step in &order.timeline {
        let _ = write!(
            out,
            "<li><time>{}</time> {}</li>",
            utc(step.timestamp),
            esc(&step.status_text)
        );
    }
    out.push_str("</ol>");
}

/// One order: its status (kept live by `/static/order.js` over server-sent events), when each step
/// happened, and what was ordered.
pub fn order(viewer: &Viewer<'_>, order: &OrderBody, is_final: bool) -> String {
    let mut body = format!(
        r#"<h1>Order <code>{id}</code></h1>
<section id="order" data-order-id="{id}" data-final="{is_final}">
<p class="status"><span id="status">{status}</span></p>"#,
        id = esc(&order.order_id),
        status = esc(&order.status_text)
    );
    timeline(&mut body, order);
    if order.being_confirmed {
        let _ = write!(
            body,
            r#"<p id="confirming">We could not yet confirm that your order reached the kitchen. It may have: nothing is lost by confirming it again, and it will be made once.</p>
<form method="post" action="/orders/{id}/confirm"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Confirm my order</button></form>"#,
            id = esc(&order.order_id),
            csrf = esc(viewer.csrf)
        );
    }
    body.push_str("</section>");
    // Filled in live by order.js when the view learns the details after the page was served.
    body.push_str(r#"<dl class="details" id="details">"#);
    if let Some(o) = &order.order {
        let extras = if o.extra_toppings.is_empty() {
            "none".to_owned()
        } else {
            o.extra_toppings.join(", ")
        };
        let _ = write!(
            body,
            r#"<dt>Sauce</dt><dd>{}</dd><dt>Cheese</dt><dd>{}</dd><dt>Main topping</dt><dd>{}</dd><dt>Extra toppings</dt><dd>{}</dd>{}"#,
            esc(&o.sauce),
            esc(&o.cheese),
            esc(&o.main_topping),
            esc(&extras),
            order
                .ordered_at_ms
                .map(|t| format!("<dt>Ordered</dt><dd>{}</dd>", utc(t)))
                .unwrap_or_default()
        );
    }
    body.push_str("</dl>");
    body.push_str(r#"<script src="/static/order.js" defer></script>"#);
    layout(&format!("Order {}", order.order_id), viewer, &body)
}

/// The customer's orders, newest first.
pub fn orders(viewer: &Viewer<'_>, orders: &[OrderBody]) -> String {
    let mut body = String::from("<h1>My orders</h1>");
    if orders.is_empty() {
        body.push_str(r#"<p>No orders yet. <a href="/menu">Order a pizza</a>.</p>"#);
    } else {
        body.push_str("<table><thead><tr><th>Order</th><th>Ordered</th><th>Status</th></tr></thead><tbody>");
        for o in orders {
            let _ = write!(
                body,
                r#"<tr><td><a href="/orders/{id}"><code>{id}</code></a></td><td>{}</td><td>{}</td></tr>"#,
                o.ordered_at_ms.map(utc).unwrap_or_default(),
                esc(&o.status_text),
                id = esc(&o.order_id)
            );
        }
        body.push_str("</tbody></table>");
    }
    layout("My orders", viewer, &body)
}

/// The answer for an order that does not exist *or is someone else's*: the same page for both.
pub fn not_found(viewer: &Viewer<'_>, text: &str) -> String {
    let body = format!(r#"<h1>{}</h1><p><a href="/orders">My orders</a></p>"#, esc(text));
    layout("Not found", viewer, &body)
}

/// A request that could not be served.
pub fn error(viewer: &Viewer<'_>, message: &str) -> String {
    let body = format!(r#"<h1>Sorry</h1>{}"#, error_box(Some(message)));
    layout("Error", viewer, &body)
}

/// The stylesheet.
pub const APP_CSS: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:0 auto;padding:0 1rem;color:#222}
header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between;border-bottom:2px solid #c0392b;padding:.5rem 0}
.brand{font-weight:bold;font-size:1.3rem;text-decoration:none;color:#c0392b}nav{display:flex;gap:.8rem;align-items:center}
form.inline{display:inline}fieldset{border:1px solid #ddd;margin:.6rem 0}fieldset label{display:inline-block;margin:.2rem .6rem .2rem 0}
button{background:#c0392b;color:#fff;border:0;padding:.4rem .9rem;border-radius:4px;cursor:pointer}
.error{background:#fdecea;border:1px solid #c0392b;padding:.5rem}.status{font-size:1.4rem;font-weight:bold}
#timeline time{color:#666;margin-right:.5rem}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:.3rem;text-align:left}
dl.details{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#666}
";

/// Keeps an order page live: server-sent events from `/orders/{id}/events`, written with
/// `textContent` only, closed once the order is final.
pub const ORDER_JS: &str = r#""use strict";
(function () {
  var section = document.getElementById("order");
  if (!section || section.dataset.final === "true") return;
  var id = section.dataset.orderId;
  var source = new EventSource("/orders/" + encodeURIComponent(id) + "/events");
  source.addEventListener("status", function (e) {
    var d = JSON.parse(e.data);
    document.getElementById("status").textContent = d.status_text;
    var list = document.getElementById("timeline");
    while (list.firstChild) list.removeChild(list.firstChild);
    d.timeline.forEach(function (step) {
      var li = document.createElement("li");
      var time = document.createElement("time");
      time.textContent = step.time;
      li.appendChild(time);
      li.appendChild(document.createTextNode(" " + step.status_text));
      list.appendChild(li);
    });
    var details = document.getElementById("details");
    if (d.order && details && !details.firstChild) {
      var extras = d.order.extra_toppings.length ? d.order.extra_toppings.join(", ") : "none";
      [["Sauce", d.order.sauce], ["Cheese", d.order.cheese], ["Main topping", d.order.main_topping],
       ["Extra toppings", extras]].forEach(function (pair) {
        var dt = document.createElement("dt");
        dt.textContent = pair[0];
        var dd = document.createElement("dd");
        dd.textContent = pair[1];
        details.appendChild(dt);
        details.appendChild(dd);
      });
    }
    if (d.final) { section.dataset.final = "true"; source.close(); }
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    fn sample_order(username: &str) -> OrderBody {
        use crate::config::SysConfig;
        use crate::domain::{customer_id_for, Order};
        use crate::view::OrderRow;
        use crate::view::OrderStatus;
        let row = OrderRow {
            order_id: "0000abcd".into(),
            status: Some(OrderStatus {
                status: 300,
                status_at_ms: 1_700_000_020_000,
                stuck: false,
                stuck_at_ms: None,
            }),
            details: Some(Order {
                extra_toppings: vec!["Mushroom".into(), "<b>Onion</b>".into()],
                sauce: "Tomato".into(),
                cheese: "Mozzarella".into(),
                main_topping: "Pepperoni".into(),
                customer_id: customer_id_for(username),
                username: username.into(),
            }),
            ordered_at_ms: Some(1_700_000_000_000),
            timeline: vec![
                (100, 1_700_000_000_000),
                (200, 1_700_000_008_000),
                (300, 1_700_000_020_000),
            ],
        };
        crate::web::api::order_body(&SysConfig::default(), "0000abcd", Some(row))
    }

    const XSS_USER: &str = "<script>x</script>";

    #[test]
    fn snapshot_login() {
        insta::assert_snapshot!(login("tok\"en", Some("username: at most 16 characters")));
    }

    #[test]
    fn snapshot_menu() {
        let v = Viewer {
            username: Some(XSS_USER),
            csrf: "csrf-token",
        };
        insta::assert_snapshot!(menu(
            &v,
            &Menu::default(),
            Some("Please check your order: sauce: \"<Ketchup>\" is not on the menu")
        ));
    }

    #[test]
    fn snapshot_order() {
        let v = Viewer {
            username: Some("alice"),
            csrf: "csrf-token",
        };
        insta::assert_snapshot!(order(&v, &sample_order("alice"), false));
    }

    #[test]
    fn snapshot_orders_and_not_found() {
        let v = Viewer {
            username: Some("alice"),
            csrf: "csrf-token",
        };
        insta::assert_snapshot!(orders(&v, &[sample_order("alice")]));
        insta::assert_snapshot!(orders(&v, &[]));
        insta::assert_snapshot!(not_found(&v, "Oops! Unknown order"));
    }

    #[test]
    fn nothing_from_outside_renders_as_markup() {
        let v = Viewer {
            username: Some(XSS_USER),
            csrf: "\"><script>",
        };
        let pages = [
            menu(&v, &Menu::default(), Some(XSS_USER)),
            orders(&v, &[sample_order(XSS_USER)]),
            order(&v, &sample_order(XSS_USER), true),
        ];
        for page in pages {
            assert!(!page.contains("<script>x"), "unescaped: {page}");
            assert!(!page.contains("\"><script>"), "unescaped attribute: {page}");
            assert!(!page.contains("<b>Onion"), "unescaped topping");
        }
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
