//! The web app's handlers, called through the router without a server (`oneshot`), on a real
//! broker and a real SQLite view.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use pizza::admin::EmbeddedBroker;
use pizza::clock::TimeScale;
use pizza::config::{KafkaProps, SysConfig};
use pizza::health::shop_health;
use pizza::shutdown::{Shutdown, ShutdownTrigger};
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::web::session::SessionKey;
use pizza::web::{router, AppState, LiveStreams};
use tower::ServiceExt;

struct App {
    router: Router,
    transport: KafkaTransport,
    view: Arc<ViewStore>,
    _stop: ShutdownTrigger,
    broker: EmbeddedBroker,
    _dir: tempfile::TempDir,
}

fn app() -> App {
    app_on(None)
}

/// The app on the embedded broker, or on the cluster `props` names.
fn app_on(props: Option<KafkaProps>) -> App {
    app_with(props, &[])
}

/// The app on the embedded broker (or `props`' cluster), with `extra` producer properties.
fn app_with(props: Option<KafkaProps>, extra: &[(&str, &str)]) -> App {
    let sys = SysConfig::default();
    let broker = EmbeddedBroker::start(&sys).unwrap();
    let mut props = props.unwrap_or_else(|| broker.props());
    for (k, v) in extra {
        props.0.push(((*k).to_owned(), (*v).to_owned()));
    }
    let transport = KafkaTransport::new(&props, "it-web").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewStore::open(&dir.path().join("orders.db")).unwrap());
    let sys = Arc::new(sys);
    let (stop, shutdown) = Shutdown::new();
    let health = shop_health(transport.clone(), &sys, TimeScale::REAL, None);
    let state = Arc::new(AppState {
        transport: transport.clone(),
        sys,
        view: view.clone(),
        follower: None,
        key: SessionKey::random(),
        shutdown,
        live: LiveStreams::default(),
        health: Arc::new(health),
        handed_out: Default::default(),
    });
    App {
        router: router(state),
        transport,
        view,
        _stop: stop,
        broker,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    cookie: Option<String>,
    location: Option<String>,
    body: String,
}

impl App {
    async fn send(&self, method: &str, uri: &str, cookie: Option<&str>, form: Option<&str>) -> Reply {
        let body = form.map(|f| ("application/x-www-form-urlencoded", f));
        self.send_as(method, uri, cookie, body).await
    }

    /// A JSON request, as a program sends it.
    async fn json(&self, method: &str, uri: &str, cookie: Option<&str>, body: &str) -> Reply {
        self.send_as(method, uri, cookie, Some(("application/json", body)))
            .await
    }

    async fn send_as(
        &self,
        method: &str,
        uri: &str,
        cookie: Option<&str>,
        body: Option<(&str, &str)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let body = match body {
            Some((content_type, b)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Body::from(b.to_owned())
            }
            None => Body::empty(),
        };
        let res = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let h = |name| {
            res.headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let cookie = h(header::SET_COOKIE).map(|c| c.split(';').next().unwrap().to_owned());
        let location = h(header::LOCATION);
        let body = String::from_utf8(to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        Reply {
            status,
            cookie,
            location,
            body,
        }
    }

    /// Logs in as `user`; returns the session cookie and its CSRF token.
    async fn login(&self, user: &str) -> (String, String) {
        let page = self.send("GET", "/login", None, None).await;
        let anon = page.cookie.expect("anonymous session cookie");
        let form = format!("csrf={}&username={}", csrf_of(&page.body), enc(user));
        let r = self.send("POST", "/login", Some(&anon), Some(&form)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        assert_eq!(r.location.as_deref(), Some("/menu"));
        let cookie = r.cookie.expect("session cookie");
        let menu = self.send("GET", "/menu", Some(&cookie), None).await;
        (cookie, csrf_of(&menu.body))
    }

    /// Places the `GOOD` order through the form.
    async fn order(&self, cookie: &str, csrf: &str) -> Reply {
        let form = format!("csrf={csrf}&{GOOD}");
        self.send("POST", "/orders", Some(cookie), Some(&form)).await
    }

    async fn produced(&self) -> i64 {
        crate::common::records_on(&self.transport, "pizza-ordered").await
    }

    /// Folds every pizza-ordered event produced so far into the view, as its follower would.
    async fn fold_ordered(&self) {
        let sys = SysConfig::default();
        let records = crate::common::topic(&self.transport, &sys.topics.ordered).await;
        let updates: Vec<_> = records
            .iter()
            .filter_map(|r| pizza::view::view_update(&sys, r, None).ok())
            .collect();
        self.view.apply_many(&sys.codes, &updates).unwrap();
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    page[at..].split('"').next().unwrap().to_owned()
}

const GOOD: &str =
    "sauce=Tomato&cheese=Mozzarella&main_topping=Pepperoni&extra_toppings=Mushroom&extra_toppings=Onion";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_order_and_see_the_order() {
    let app = app();
    // Not logged in: every page leads to the login page.
    let r = app.send("GET", "/menu", None, None).await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/login"))
    );

    let (cookie, csrf) = app.login("  alice ").await;
    let menu = app.send("GET", "/menu", Some(&cookie), None).await;
    assert!(menu.body.contains("Logged in as <b>alice</b>"));
    let r = app.order(&cookie, &csrf).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let to = r.location.unwrap();
    let order_id = to.strip_prefix("/orders/").unwrap().to_owned();
    assert_eq!(app.produced().await, 1, "one pizza-ordered event");
    // The view has not folded it yet; the session that placed it still sees it.
    let cookie = r.cookie.unwrap();
    let page = app.send("GET", &to, Some(&cookie), None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Order received and being prepared"),
        "{}",
        page.body
    );

    // Once the view has it, the customer's orders list shows it.
    app.fold_ordered().await;
    app.view
        .apply_status(
            &SysConfig::default().codes,
            &order_id,
            999,
            1_700_000_050_000,
            None,
        )
        .unwrap();
    let list = app.send("GET", "/orders", Some(&cookie), None).await;
    assert!(
        list.body.contains(&order_id) && list.body.contains("Your pizza was delivered"),
        "{}",
        list.body
    );

    // The live stream sends the final status, then ends.
    let events = app
        .send("GET", &format!("/orders/{order_id}/events"), Some(&cookie), None)
        .await;
    assert_eq!(events.status, StatusCode::OK);
    assert!(events.body.contains("event: status"), "{}", events.body);
    assert!(events.body.contains(r#""final":true"#) && events.body.contains("Your pizza was delivered"));

    // Logging out needs the token too, and ends the session.
    let out = app
        .send("POST", "/logout", Some(&cookie), Some(&format!("csrf={csrf}")))
        .await;
    assert_eq!(
        (out.status, out.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/login"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forms_get_a_4xx_and_produce_nothing() {
    let app = app();
    let (cookie, csrf) = app.login("bob").await;
    for (form, expect) in [
        (
            format!("csrf={csrf}&sauce=Ketchup&cheese=Mozzarella&main_topping=Pepperoni"),
            "sauce: &quot;Ketchup&quot; is not on the menu",
        ),
        (
            format!("csrf={csrf}&sauce=Tomato&main_topping=Pepperoni"),
            "cheese: is required",
        ),
        (
            format!("csrf={csrf}&{GOOD}&extra_toppings=Pineapple"),
            "extra_toppings: &quot;Pineapple&quot; is not on the menu",
        ),
    ] {
        let r = app.send("POST", "/orders", Some(&cookie), Some(&form)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.body.contains(expect), "{expect} in {}", r.body);
    }
    // No token, or another one: refused.
    let r = app.send("POST", "/orders", Some(&cookie), Some(GOOD)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send(
            "POST",
            "/orders",
            Some(&cookie),
            Some(&format!("csrf=0000&{GOOD}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A username too long is refused at login.
    let page = app.send("GET", "/login", None, None).await;
    let form = format!("csrf={}&username={}", csrf_of(&page.body), "x".repeat(17));
    let r = app
        .send("POST", "/login", page.cookie.as_deref(), Some(&form))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("at most 16 characters"));
    // A cookie signed with another key is no session.
    let forged = pizza::web::session::Session::logged_in("bob").set_cookie(&SessionKey::random());
    let forged = forged.split(';').next().unwrap();
    let r = app.send("GET", "/menu", Some(forged), None).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    assert_eq!(app.produced().await, 0, "nothing was produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_order_looks_exactly_like_no_order() {
    let app = app();
    let codes = SysConfig::default().codes;
    let (alice, csrf) = app.login("alice").await;
    let placed = app.order(&alice, &csrf).await;
    let alice = placed.cookie.unwrap();
    let to = placed.location.unwrap();
    let alices = to.strip_prefix("/orders/").unwrap().to_owned();
    let alices = alices.as_str();
    app.fold_ordered().await;
    app.view.apply_status(&codes, alices, 200, 2, None).unwrap();
    assert_eq!(
        app.send("GET", &format!("/orders/{alices}"), Some(&alice), None)
            .await
            .status,
        StatusCode::OK
    );
    let list = app.send("GET", "/orders", Some(&alice), None).await;
    assert!(list.body.contains(alices), "{}", list.body);

    // Someone else, and someone else who types alice's name (issue 25, defect 7: the customer
    // was the name's md5, so anyone typing it saw alice's orders and ordered as her).
    let (mallory, _) = app.login("mallory").await;
    let (not_alice, _) = app.login("alice").await;
    for mallory in [mallory, not_alice] {
        let list = app.send("GET", "/orders", Some(&mallory), None).await;
        assert!(!list.body.contains(alices));
        for path in ["/orders/{}", "/orders/{}/events", "/api/orders/{}"] {
            let theirs = app
                .send("GET", &path.replace("{}", alices), Some(&mallory), None)
                .await;
            let nobody = app
                .send("GET", &path.replace("{}", "0000dead"), Some(&mallory), None)
                .await;
            assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                (theirs.status, &theirs.body),
                (nobody.status, &nobody.body),
                "{path}: same answer"
            );
            assert!(!theirs.body.contains("Mozzarella") && !theirs.body.contains("in the oven"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_a_username_renders_as_text() {
    let app = app();
    let (cookie, _) = app.login("<script>").await;
    let menu = app.send("GET", "/menu", Some(&cookie), None).await;
    assert!(
        menu.body.contains("Logged in as <b>&lt;script&gt;</b>"),
        "{}",
        menu.body
    );
    assert!(!menu.body.contains("<b><script>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_places_and_reads_orders_for_its_session() {
    let app = app();
    let json = |method: &str, uri: &str, cookie: Option<&str>, body: &str| {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    };
    let order = r#"{"sauce":"Tomato","cheese":"Gouda","main_topping":"Pork","extra_toppings":["Egg"]}"#;
    let r = app
        .router
        .clone()
        .oneshot(json("POST", "/api/orders", None, order))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .router
        .clone()
        .oneshot(json("POST", "/api/login", None, r#"{"username":"carol"}"#))
        .await
        .unwrap();
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let r = app
        .router
        .clone()
        .oneshot(json("POST", "/api/orders", Some(&cookie), order))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: serde_json::Value =
        serde_json::from_slice(&to_bytes(r.into_body(), 4096).await.unwrap()).unwrap();
    let id = body["order_id"].as_str().unwrap();
    let r = app
        .router
        .clone()
        .oneshot(json("GET", &format!("/api/orders/{id}"), Some(&cookie), ""))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bad = r#"{"sauce":"Tomato","cheese":"Gouda","main_topping":"Tofu"}"#;
    let r = app
        .router
        .clone()
        .oneshot(json("POST", "/api/orders", Some(&cookie), bad))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.produced().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_order_cannot_be_made_durable_the_customer_is_told_so() {
    // The producer gives a final answer before the request times out (the default, 10 s, is below
    // the 15 s request timeout); here a user's [kafka] setting shortens it to keep the test quick.
    let default_ms: u128 = pizza::transport::kafka::MESSAGE_TIMEOUT_MS.parse().unwrap();
    assert!(default_ms < pizza::web::REQUEST_TIMEOUT.as_millis());
    assert!(pizza::command::PLACE_WITHIN < pizza::web::REQUEST_TIMEOUT);
    let mut props = KafkaProps::bootstrap("127.0.0.1:1");
    props.0.push(("message.timeout.ms".into(), "1500".into()));
    let app = app_on(Some(props));
    let (cookie, csrf) = app.login("dave").await;
    let r = app.order(&cookie, &csrf).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert!(
        r.body.contains("could not be recorded. Nothing was ordered"),
        "{}",
        r.body
    );
    assert!(
        r.location.is_none() && r.cookie.is_none(),
        "no order page, no order remembered"
    );
}

/// A produce whose answer came after the producer gave up may be in the log: the customer is told
/// the order is being confirmed (never "not placed"), and confirming sends the same event again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_may_have_been_written_is_being_confirmed_never_not_placed() {
    let app = app_with(None, &[("message.timeout.ms", "1500")]);
    let (cookie, csrf) = app.login("erin").await;
    // A first order connects the producer: a record still queued when it gives up was never sent,
    // and that one is truly "not placed".
    let r = app.order(&cookie, &csrf).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    app.broker.answer_late(Duration::from_secs(3)).unwrap();
    let r = app.order(&cookie, &csrf).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page_uri = r.location.expect("the order's page");
    let cookie = r.cookie.expect("the order is remembered");
    let page = app.send("GET", &page_uri, Some(&cookie), None).await;
    assert!(
        page.body.contains("Being confirmed") && page.body.contains("Confirm my order"),
        "{}",
        page.body
    );
    // It was written, though the customer's request failed: exactly why "not placed" would lie.
    app.broker.answer_late(Duration::ZERO).unwrap();
    let id = page_uri.trim_start_matches("/orders/").to_owned();
    wait_until(|| async { copies(&app, &id).await >= 1 }).await;

    // Confirming sends the very same event again; the order is then confirmed.
    let confirm = format!("{page_uri}/confirm");
    let r = app
        .send("POST", &confirm, Some(&cookie), Some(&format!("csrf={csrf}")))
        .await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (StatusCode::SEE_OTHER, Some(page_uri.as_str()))
    );
    let cookie = r.cookie.expect("the session forgets the confirmation");
    // At least twice (librdkafka may have retried the slow one too), and the same event each time.
    let ordered = crate::common::topic(&app.transport, "pizza-ordered").await;
    let copies_of: Vec<_> = ordered
        .iter()
        .filter(|r| r.key.as_deref() == Some(id.as_bytes()))
        .collect();
    assert!(copies_of.len() >= 2, "{copies_of:?}");
    assert!(
        copies_of.iter().all(|r| r.payload == copies_of[0].payload),
        "{copies_of:?}"
    );
    let page = app.send("GET", &page_uri, Some(&cookie), None).await;
    assert!(!page.body.contains("Confirm my order"), "{}", page.body);
    // An order the session neither placed nor is confirming: not found.
    let r = app
        .send(
            "POST",
            "/orders/ffffffff/confirm",
            Some(&cookie),
            Some(&format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// The JSON API: 202 while an order is being confirmed, 200 once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_answers_202_while_an_order_is_being_confirmed() {
    let app = app_with(None, &[("message.timeout.ms", "1500")]);
    let (cookie, csrf) = app.login("frank").await;
    // Connect the producer first (see above).
    let r = app.order(&cookie, &csrf).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    app.broker.answer_late(Duration::from_secs(3)).unwrap();
    let order = r#"{"sauce":"Tomato","cheese":"Gouda","main_topping":"Pork"}"#;
    let r = app.json("POST", "/api/orders", Some(&cookie), order).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["confirmed"], false);
    let id = body["order_id"].as_str().unwrap().to_owned();
    let cookie = r.cookie.unwrap();
    let r = app
        .json("GET", &format!("/api/orders/{id}"), Some(&cookie), "")
        .await;
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (body["being_confirmed"].as_bool(), body["status_text"].as_str()),
        (Some(true), Some("Being confirmed"))
    );
    app.broker.answer_late(Duration::ZERO).unwrap();
    let uri = format!("/api/orders/{id}/confirm");
    let r = app.json("POST", &uri, Some(&cookie), "not json").await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a confirmation is JSON: {}",
        r.body
    );
    let r = app.json("POST", &uri, Some(&cookie), "{}").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["confirmed"],
        true
    );
    assert!(copies(&app, &id).await >= 2);
}

/// How many records of pizza-ordered are keyed `order_id`.
async fn copies(app: &App, order_id: &str) -> usize {
    crate::common::topic(&app.transport, "pizza-ordered")
        .await
        .iter()
        .filter(|r| r.key.as_deref() == Some(order_id.as_bytes()))
        .count()
}

/// Polls `cond` every 100 ms for at most 20 s.
async fn wait_until<F: Future<Output = bool>>(cond: impl Fn() -> F) {
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 20 s");
}
