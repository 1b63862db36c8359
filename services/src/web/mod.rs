//! The web app: the command side as customers see it (axum). Pages to log in, order from the menu,
//! watch an order live (server-sent events) and list one's orders; a JSON API for programs; the
//! original's `/health-check`.
//!
//! - Sessions are signed cookies ([`session`]) under a per-installation key.
//! - Every form carries the session's CSRF token; cookies are `SameSite=Strict`.
//! - Every value rendered is escaped ([`pages::esc`]); a Content-Security-Policy forbids inline script.
//! - An order that is someone else's gets exactly the answer of one that does not exist.
//! - Placing an order is one durable event or an error: nothing half-created. When the produce
//!   failed after it may have written the event, the customer is told the order is being
//!   confirmed (never that it was not placed) and can confirm it: the same event is sent again.

pub mod api;
pub mod app;
pub mod pages;
pub mod server;
pub mod session;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::future::BoxFuture;
use futures::stream::Stream;

use crate::clock::now_ms;
use crate::command::{confirm_order_as, place_order_as, PlaceError};
use crate::config::SysConfig;
use crate::domain::{OrderId, OrderRequest};
use crate::error::Report;
use crate::shutdown::Shutdown;
use crate::store::{StoreError, ViewStore};
use crate::transport::Transport;
use api::{order_body, OrderBody};
use pages::Viewer;
use session::{Session, SessionKey, Unconfirmed};

/// What the handlers share.
pub struct AppState<T> {
    pub transport: T,
    pub sys: Arc<SysConfig>,
    /// The view read here: the web app's own, folded from the log by `follower`.
    pub view: Arc<ViewStore>,
    /// Keeps `view` up with the log; `None` when something else folds it (tests).
    pub follower: Option<Arc<crate::view::ViewFollower>>,
    /// Signs session cookies.
    pub key: SessionKey,
    /// Fires when the web app shuts down: live streams end then.
    pub shutdown: Shutdown,
    /// The live streams open, per customer and in all.
    pub live: LiveStreams,
    /// What `/health-check` asks.
    pub health: Arc<dyn HealthCheck>,
    /// The order ids this instance handed out lately, before its view shows them.
    pub handed_out: HandedOut,
}

/// An id for a new order that no order `view` holds (nor one of those `handed_out` lately)
/// has: the wire keeps the original's 8 hex characters, 32 random bits, so among a
/// million orders one new id in ~4,300 is taken, and the new order would be read as the old
/// one's duplicate. `draw` is asked again, [`ID_DRAWS`] times at most; `None` when every
/// draw was taken.
pub fn fresh_order_id(
    view: &ViewStore,
    handed_out: &HandedOut,
    mut draw: impl FnMut() -> OrderId,
) -> Option<OrderId> {
    for _ in 0..ID_DRAWS {
        let id = draw();
        let in_view = match view.order(id.as_str()) {
            Ok(row) => row.is_some(),
            Err(e) => {
                // A view that cannot be read now does not stop an order: the id is very
                // likely free.
                tracing::warn!(error = %Report(&e), "could not ask the view whether an order id is taken");
                false
            }
        };
        if !in_view && !handed_out.contains(&id) {
            handed_out.add(&id);
            return Some(id);
        }
        tracing::info!(order = id.as_str(), "order id taken: drawn again");
    }
    tracing::error!(draws = ID_DRAWS, "every order id drawn was taken");
    None
}

/// How many ids are drawn for a new order before placing it is given up: each is taken with a
/// chance of (orders in the view) / 2^32, so 16 taken in a row means the id space is full.
pub const ID_DRAWS: usize = 16;

/// How many order ids an instance remembers having handed out (its view shows them within
/// [`READ_YOUR_WRITES_WITHIN`] as a rule; these cover the moments before).
pub const HANDED_OUT: usize = 4096;

/// The last [`HANDED_OUT`] order ids an instance handed out.
#[derive(Debug, Default)]
pub struct HandedOut(
    std::sync::Mutex<(
        std::collections::HashSet<OrderId>,
        std::collections::VecDeque<OrderId>,
    )>,
);

impl HandedOut {
    fn contains(&self, id: &OrderId) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.contains(id)
    }

    fn add(&self, id: &OrderId) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if set.insert(id.clone()) {
            order.push_back(id.clone());
        }
        while order.len() > HANDED_OUT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }
}

/// How long placing an order waits for the web app's own view to show it (read your own
/// writes), well within [`REQUEST_TIMEOUT`]. Past it the order page says the order is not shown
/// yet, and shows it once the view has it.
pub const READ_YOUR_WRITES_WITHIN: Duration = Duration::from_secs(2);

impl<T> AppState<T> {
    /// An id for a new order: [`fresh_order_id`] in this instance's view.
    pub fn fresh_order_id(&self, draw: impl FnMut() -> OrderId) -> Option<OrderId> {
        fresh_order_id(&self.view, &self.handed_out, draw)
    }

    /// Read your own writes: waits, for [`READ_YOUR_WRITES_WITHIN`] at most, until this
    /// instance's view has folded the order acknowledged at `acked`.
    pub async fn seen(&self, acked: crate::transport::Acked) {
        let Some(f) = &self.follower else {
            return;
        };
        let topic = &self.sys.topics.ordered;
        if !f
            .reached(topic, acked.partition, acked.offset, READ_YOUR_WRITES_WITHIN)
            .await
        {
            tracing::warn!(
                partition = acked.partition,
                offset = acked.offset,
                trouble = ?f.trouble(),
                "the view did not show a new order in time"
            );
        }
    }
}

/// What `/health-check` reports on: the broker and the services.
pub trait HealthCheck: Send + Sync + 'static {
    /// What is wrong with the shop, a line each; empty when all is well.
    fn problems(&self) -> BoxFuture<'_, Vec<String>>;
}

/// Most live streams one customer may hold open.
pub const LIVE_PER_CUSTOMER: usize = 8;
/// Most live streams open at once, all customers together, by default (a web app allowing fewer
/// connections allows fewer streams: see [`LiveStreams::for_connections`]).
pub const LIVE_TOTAL: usize = 256;

/// The live streams open, counted per customer.
#[derive(Clone, Debug)]
pub struct LiveStreams(Arc<Mutex<LiveCount>>);

#[derive(Debug)]
struct LiveCount {
    /// Most streams in all.
    cap: usize,
    total: usize,
    /// Per customer, its open streams, oldest first.
    per_customer: HashMap<String, Vec<(u64, Arc<Ended>)>>,
    next_id: u64,
}

/// Set when a stream's place was given to another customer: the stream ends.
#[derive(Debug, Default)]
struct Ended {
    yes: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Default for LiveStreams {
    fn default() -> Self {
        LiveStreams::with_cap(LIVE_TOTAL)
    }
}

/// One open live stream; closing it (dropping this) frees its place.
#[derive(Debug)]
pub struct LivePlace {
    streams: LiveStreams,
    customer: String,
    id: u64,
    ended: Arc<Ended>,
}

impl LivePlace {
    /// Whether the place was given to another customer: the stream must end.
    pub fn taken(&self) -> bool {
        self.ended.yes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once the place is given to another customer.
    pub async fn wait_taken(&self) {
        loop {
            let woken = self.ended.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.taken() {
                return;
            }
            woken.await;
        }
    }
}

impl LiveStreams {
    /// At most `cap` streams in all.
    pub fn with_cap(cap: usize) -> LiveStreams {
        LiveStreams(Arc::new(Mutex::new(LiveCount {
            cap,
            total: 0,
            per_customer: HashMap::new(),
            next_id: 0,
        })))
    }

    /// The caps for a web app that keeps at most `max_connections` open: streams may hold a
    /// quarter of them at most (and [`LIVE_TOTAL`]), so they can never take every connection.
    pub fn for_connections(max_connections: usize) -> LiveStreams {
        LiveStreams::with_cap((max_connections / 4).clamp(1, LIVE_TOTAL))
    }

    /// A place for one more stream of `customer`, if the caps allow it. When every place is
    /// taken, the customer holding the most gives up its oldest one, if it holds at least two
    /// more than `customer`: a few customers (or one person logged in many times) hoarding
    /// streams cannot keep out one who holds few (issue 25, defect 8).
    pub fn open(&self, customer: &str) -> Option<LivePlace> {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per_customer.get(customer).map_or(0, Vec::len);
        if mine >= LIVE_PER_CUSTOMER {
            return None;
        }
        if c.total >= c.cap {
            let hoarder = c
                .per_customer
                .iter()
                .max_by_key(|(name, places)| (places.len(), std::cmp::Reverse((*name).clone())))
                .filter(|(_, places)| places.len() >= mine + 2)
                .map(|(name, _)| name.clone())?;
            let places = c.per_customer.get_mut(&hoarder).expect("found");
            let (_, ended) = places.remove(0);
            if places.is_empty() {
                c.per_customer.remove(&hoarder);
            }
            c.total -= 1;
            ended.yes.store(true, std::sync::atomic::Ordering::Release);
            ended.notify.notify_waiters();
        }
        c.total += 1;
        c.next_id += 1;
        let (id, ended) = (c.next_id, Arc::new(Ended::default()));
        c.per_customer
            .entry(customer.to_owned())
            .or_default()
            .push((id, ended.clone()));
        Some(LivePlace {
            streams: self.clone(),
            customer: customer.to_owned(),
            id,
            ended,
        })
    }
}

impl Drop for LivePlace {
    fn drop(&mut self) {
        let mut c = self.streams.0.lock().unwrap_or_else(|p| p.into_inner());
        // A place given to another customer was counted out then.
        let Some(places) = c.per_customer.get_mut(&self.customer) else {
            return;
        };
        let before = places.len();
        places.retain(|(id, _)| *id != self.id);
        let gone = before - places.len();
        if places.is_empty() {
            c.per_customer.remove(&self.customer);
        }
        c.total -= gone;
    }
}

/// How long a web app's view may fail to follow the log (the broker away a moment, a busy
/// file) before `/health-check` reports it.
pub const VIEW_FAILING_GRACE: Duration = Duration::from_secs(10);

/// Most orders listed on "My orders".
pub const ORDERS_LISTED: u32 = 50;
/// How long a request other than a live stream may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a live stream checks the view for changes (a cheap `PRAGMA data_version`).
pub const LIVE_CHECK: Duration = Duration::from_millis(100);
/// How long one live stream lasts; the browser reconnects by itself after.
pub const LIVE_MAX: Duration = Duration::from_secs(30 * 60);
/// The largest request body taken (a form or an API call is a few hundred bytes); a larger one is
/// refused with 413 before anything parses it.
pub const BODY_MAX_BYTES: usize = 4 * 1024;

/// The router. State is shared, so tests call it without a server.
pub fn router<T: Transport>(state: Arc<AppState<T>>) -> Router {
    let timed = Router::new()
        .route("/", get(home))
        .route("/health-check", get(health_check::<T>))
        .route("/login", get(login_page).post(login::<T>))
        .route("/logout", post(logout))
        .route("/menu", get(menu::<T>))
        .route("/orders", get(my_orders::<T>).post(place::<T>))
        .route("/orders/{order_id}", get(order_page::<T>))
        .route("/orders/{order_id}/confirm", post(confirm_page::<T>))
        .route("/api/login", post(api::login::<T>))
        .route("/api/orders", post(api::place::<T>))
        .route("/api/orders/{order_id}", get(api::order::<T>))
        .route("/api/orders/{order_id}/confirm", post(api::confirm::<T>))
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], pages::APP_CSS) }),
        )
        .route(
            "/static/order.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], pages::ORDER_JS) }),
        )
        .layer(middleware::from_fn(timeout));
    Router::new()
        .route("/orders/{order_id}/events", get(order_events::<T>))
        .merge(timed)
        .layer(DefaultBodyLimit::max(BODY_MAX_BYTES))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// `Ok`, as the original answers, when the broker and every service are fine; else 503 with what
/// is wrong, a line each.
async fn health_check<T: Transport>(State(st): State<Arc<AppState<T>>>) -> Response {
    let mut problems = st.health.problems().await;
    // The web app's own view: one still folding the log from its start, or failing to follow
    // it, shows customers nothing, or nothing new (issue 25, defect 8).
    let view = st.follower.as_ref().and_then(|f| f.problems(VIEW_FAILING_GRACE));
    problems.extend(view.map(|p| format!("web view: {p}")));
    if problems.is_empty() {
        return "Ok".into_response();
    }
    let body = format!("Unhealthy\n{}\n", problems.join("\n"));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the request took too long").into_response(),
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    res
}

/// The session from the request's cookie, if it carries a validly signed one.
pub struct MaybeSession(pub Option<Session>);

impl<T: Transport> FromRequestParts<Arc<AppState<T>>> for MaybeSession {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, st: &Arc<AppState<T>>) -> Result<Self, Infallible> {
        let session = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::cookie_value)
            .and_then(|v| Session::decode(v, &st.key));
        Ok(MaybeSession(session))
    }
}

/// A page that could not be served; rendered as HTML with the right status code.
pub enum PageError {
    BadRequest(Box<Session>, String),
    Forbidden(String),
    NotFound(Option<Box<Session>>, String),
    Unavailable(Box<Session>),
    TooManyStreams,
    /// The view could not be read: logged with its cause, a 500 for the customer.
    Internal(StoreError),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let anon = Viewer {
            username: None,
            csrf: "",
        };
        match self {
            PageError::BadRequest(s, m) => {
                let v = Viewer {
                    username: s.username.as_deref(),
                    csrf: &s.csrf,
                };
                (StatusCode::BAD_REQUEST, Html(pages::error(&v, &m))).into_response()
            }
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, Html(pages::error(&anon, &m))).into_response(),
            PageError::NotFound(s, text) => {
                let v = s.as_ref().map_or(anon, |s| Viewer {
                    username: s.username.as_deref(),
                    csrf: &s.csrf,
                });
                (StatusCode::NOT_FOUND, Html(pages::not_found(&v, &text))).into_response()
            }
            PageError::Unavailable(s) => {
                let v = Viewer {
                    username: s.username.as_deref(),
                    csrf: &s.csrf,
                };
                let msg = "Your order could not be recorded. Nothing was ordered; please try again.";
                (StatusCode::SERVICE_UNAVAILABLE, Html(pages::error(&v, msg))).into_response()
            }
            PageError::TooManyStreams => (
                StatusCode::TOO_MANY_REQUESTS,
                Html(pages::error(
                    &anon,
                    "Too many live updates are open for you. Close some pages and reload.",
                )),
            )
                .into_response(),
            PageError::Internal(e) => {
                tracing::error!(error = %Report(&e), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html(pages::error(&anon, "Something went wrong on our side.")),
                )
                    .into_response()
            }
        }
    }
}

fn logged_in(session: Option<Session>) -> Option<Session> {
    session.filter(|s| s.username.is_some())
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn with_cookie(cookie: String, res: impl IntoResponse) -> Response {
    ([(header::SET_COOKIE, cookie)], res).into_response()
}

/// A form body's fields, repeated names kept (extra toppings).
fn form_fields(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn check_csrf(session: &Session, fields: &[(String, String)]) -> Result<(), PageError> {
    match field(fields, "csrf") {
        Some(t) if session.csrf_matches(t) => Ok(()),
        _ => Err(PageError::Forbidden(
            "This form has expired. Go back, reload the page and try again.".into(),
        )),
    }
}

async fn home(MaybeSession(session): MaybeSession) -> Redirect {
    match session {
        Some(s) if s.username.is_some() => Redirect::to("/menu"),
        _ => Redirect::to("/login"),
    }
}

async fn login_page<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
) -> Response {
    // Even the login form is CSRF-protected: the token lives in an anonymous session.
    let session = session.unwrap_or_else(Session::anonymous);
    with_cookie(
        session.set_cookie(&st.key),
        Html(pages::login(&session.csrf, None)),
    )
}

async fn login<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    body: Bytes,
) -> Result<Response, PageError> {
    let session =
        session.ok_or_else(|| PageError::Forbidden("Your session expired. Reload the page.".into()))?;
    let fields = form_fields(&body);
    check_csrf(&session, &fields)?;
    match api::valid_username(field(&fields, "username").unwrap_or_default()) {
        Ok(username) => {
            let s = Session::logged_in(&username);
            Ok(with_cookie(s.set_cookie(&st.key), Redirect::to("/menu")))
        }
        Err(msg) => Ok((
            StatusCode::BAD_REQUEST,
            Html(pages::login(&session.csrf, Some(&msg))),
        )
            .into_response()),
    }
}

async fn logout(MaybeSession(session): MaybeSession, body: Bytes) -> Result<Response, PageError> {
    let session =
        session.ok_or_else(|| PageError::Forbidden("Your session expired. Reload the page.".into()))?;
    check_csrf(&session, &form_fields(&body))?;
    Ok(with_cookie(session::clear_cookie(), Redirect::to("/login")))
}

async fn menu<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
) -> Response {
    match logged_in(session) {
        Some(s) => Html(pages::menu(
            &Viewer {
                username: s.username.as_deref(),
                csrf: &s.csrf,
            },
            &st.sys.menu,
            None,
        ))
        .into_response(),
        None => to_login(),
    }
}

async fn place<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    body: Bytes,
) -> Result<Response, PageError> {
    let Some(mut session) = logged_in(session) else {
        return Ok(to_login());
    };
    let fields = form_fields(&body);
    check_csrf(&session, &fields)?;
    let req = OrderRequest {
        username: session.username.clone().unwrap_or_default(),
        sauce: field(&fields, "sauce").unwrap_or_default().to_owned(),
        cheese: field(&fields, "cheese").unwrap_or_default().to_owned(),
        main_topping: field(&fields, "main_topping").unwrap_or_default().to_owned(),
        extra_toppings: fields
            .iter()
            .filter(|(k, _)| k == "extra_toppings")
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let customer = session.customer_id.clone().unwrap_or_default();
    let Some(id) = st.fresh_order_id(OrderId::random) else {
        return Err(PageError::Unavailable(Box::new(session)));
    };
    match place_order_as(&st.transport, &st.sys, (&req, &customer), id, now_ms()).await {
        Ok(placed) => {
            st.seen(placed.acked).await;
            session.placed(&placed.order_id);
            let to = format!("/orders/{}", placed.order_id);
            Ok(with_cookie(session.set_cookie(&st.key), Redirect::to(&to)))
        }
        Err(PlaceError::Invalid(f)) => {
            let v = Viewer {
                username: session.username.as_deref(),
                csrf: &session.csrf,
            };
            let msg = format!("Please check your order: {f}");
            Ok((
                StatusCode::BAD_REQUEST,
                Html(pages::menu(&v, &st.sys.menu, Some(&msg))),
            )
                .into_response())
        }
        Err(PlaceError::Unavailable(e)) => {
            tracing::warn!(error = %Report(&e), "order not placed");
            Err(PageError::Unavailable(Box::new(session)))
        }
        Err(e @ PlaceError::Unconfirmed { .. }) => {
            let id = being_confirmed(&mut session, &req, e);
            Ok(with_cookie(
                session.set_cookie(&st.key),
                Redirect::to(&format!("/orders/{id}")),
            ))
        }
    }
}

/// Keeps an order answered "being confirmed" in `session`, so it can be confirmed; its id.
fn being_confirmed(session: &mut Session, req: &OrderRequest, e: PlaceError) -> OrderId {
    tracing::warn!(error = %Report(&e), "order being confirmed");
    let PlaceError::Unconfirmed {
        order_id,
        ordered_at_ms,
        ..
    } = e
    else {
        unreachable!("only an unconfirmed order is being confirmed")
    };
    session.being_confirmed(Unconfirmed::of(&order_id, ordered_at_ms, req));
    order_id
}

/// What confirming an order came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The order is in the log: the view shows it, or the broker acknowledged it now.
    Confirmed,
    /// Still not known: the order may or may not be in the log.
    StillConfirming,
}

/// Confirms `order_id` for `session`: confirmed when the view shows it as the user's; else the
/// session's order being confirmed is sent again exactly as first sent (placing is idempotent).
/// `None` when it is neither (not this user's order, or unknown).
pub async fn confirm<T: Transport>(
    st: &AppState<T>,
    session: &mut Session,
    order_id: &str,
) -> Result<Option<Confirmation>, StoreError> {
    let in_view =
        owned_order(st, session, order_id)?.is_some_and(|b| b.status.is_some() || b.order.is_some());
    let confirming = session.confirming(order_id).cloned();
    if in_view {
        session.confirmed(order_id);
        return Ok(Some(Confirmation::Confirmed));
    }
    let Some(u) = confirming else {
        return Ok(None);
    };
    let req = u.request(session.username.as_deref().unwrap_or_default());
    let customer = session.customer_id.clone().unwrap_or_default();
    match confirm_order_as(
        &st.transport,
        &st.sys,
        (&req, &customer),
        u.order_id,
        u.ordered_at_ms,
    )
    .await
    {
        Ok(placed) => {
            st.seen(placed.acked).await;
            session.confirmed(order_id);
            Ok(Some(Confirmation::Confirmed))
        }
        Err(e) => {
            // The menu may have changed since, or the broker is still out of reach: either way
            // the first attempt may be in the log, so the order is still being confirmed.
            tracing::warn!(order = order_id, error = %Report(&e), "order still being confirmed");
            Ok(Some(Confirmation::StillConfirming))
        }
    }
}

/// The order page's "confirm" button: sends the order being confirmed again, then shows its page.
async fn confirm_page<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    Path(order_id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let Some(mut session) = logged_in(session) else {
        return Ok(to_login());
    };
    check_csrf(&session, &form_fields(&body))?;
    match confirm(&st, &mut session, &order_id)
        .await
        .map_err(PageError::Internal)?
    {
        Some(_) => {
            let to = format!("/orders/{order_id}");
            Ok(with_cookie(session.set_cookie(&st.key), Redirect::to(&to)))
        }
        None => Err(unknown_order(&st.sys, Some(session))),
    }
}

/// The order if `session`'s user placed it; `None` for an order that does not exist or that is
/// someone else's (the caller answers both the same way). An order this session just placed is
/// shown before the view has it.
pub fn owned_order<T>(
    st: &AppState<T>,
    session: &Session,
    order_id: &str,
) -> Result<Option<OrderBody>, StoreError> {
    let (Some(customer), Ok(id)) = (session.customer_id.as_deref(), order_id.parse::<OrderId>()) else {
        return Ok(None);
    };
    let row = st.view.order(id.as_str())?;
    let mine = match row.as_ref().and_then(|r| r.details.as_ref()) {
        Some(details) => details.customer_id == customer,
        // The view has no details yet: only the session that placed it may look.
        None => session.recent.contains(&id),
    };
    let confirming = row.is_none() && session.confirming(id.as_str()).is_some();
    Ok(mine.then(|| {
        let mut body = order_body(&st.sys, id.as_str(), row);
        if confirming {
            body.being_confirmed = true;
            BEING_CONFIRMED.clone_into(&mut body.status_text);
        }
        body
    }))
}

/// What an order being confirmed shows instead of a status.
pub const BEING_CONFIRMED: &str = "Being confirmed";

fn unknown_order(st: &SysConfig, session: Option<Session>) -> PageError {
    PageError::NotFound(session.map(Box::new), st.labels.text(&st.codes, st.codes.unknown))
}

async fn order_page<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    Path(order_id): Path<String>,
) -> Result<Response, PageError> {
    let Some(session) = logged_in(session) else {
        return Ok(to_login());
    };
    match owned_order(&st, &session, &order_id).map_err(PageError::Internal)? {
        Some(body) => {
            let v = Viewer {
                username: session.username.as_deref(),
                csrf: &session.csrf,
            };
            Ok(Html(pages::order(&v, &body, body.is_final)).into_response())
        }
        None => Err(unknown_order(&st.sys, Some(session))),
    }
}

async fn my_orders<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
) -> Result<Response, PageError> {
    let Some(session) = logged_in(session) else {
        return Ok(to_login());
    };
    let customer = session.customer_id.clone().unwrap_or_default();
    let ids = st
        .view
        .orders_of(&customer, ORDERS_LISTED)
        .map_err(PageError::Internal)?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let row = st.view.order(&id).map_err(PageError::Internal)?;
        rows.push(order_body(&st.sys, &id, row));
    }
    let v = Viewer {
        username: session.username.as_deref(),
        csrf: &session.csrf,
    };
    Ok(Html(pages::orders(&v, &rows)).into_response())
}

/// Server-sent events for one order: an event named `status` with the order's JSON whenever the
/// view changes it, the last one when it is final.
async fn order_events<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    Path(order_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let session = session.filter(|s| s.username.is_some());
    let Some(session) = session else {
        return Err(unknown_order(&st.sys, None));
    };
    if owned_order(&st, &session, &order_id)
        .map_err(PageError::Internal)?
        .is_none()
    {
        return Err(unknown_order(&st.sys, Some(session)));
    }
    let customer = session.customer_id.clone().unwrap_or_default();
    let Some(place) = st.live.open(&customer) else {
        return Err(PageError::TooManyStreams);
    };
    struct Live<T> {
        st: Arc<AppState<T>>,
        session: Session,
        order_id: String,
        version: Option<i64>,
        sent: Option<OrderBody>,
        done: bool,
        until: Instant,
        shutdown: Shutdown,
        place: LivePlace,
    }
    let start = Live {
        shutdown: st.shutdown.clone(),
        st,
        session,
        order_id,
        version: None,
        sent: None,
        done: false,
        until: Instant::now() + LIVE_MAX,
        place,
    };
    let stream = futures::stream::unfold(start, |mut live| async move {
        while !live.done && Instant::now() < live.until && !live.shutdown.is_fired() && !live.place.taken() {
            let version = live.st.view.data_version().ok();
            if version.is_none() || version != live.version {
                live.version = version;
                if let Ok(Some(body)) = owned_order(&live.st, &live.session, &live.order_id) {
                    if live.sent.as_ref() != Some(&body) {
                        live.done = body.is_final;
                        let event = Event::default()
                            .event("status")
                            .json_data(&body)
                            .expect("order JSON");
                        live.sent = Some(body);
                        return Some((Ok(event), live));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LIVE_CHECK) => {}
                // The web app is shutting down: end the stream, so the connection can close.
                _ = live.shutdown.wait() => {}
                // Its place went to a customer who held fewer.
                _ = live.place.wait_taken() => {}
            }
        }
        None
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Where the installation's session key lives in a data directory.
pub fn session_key_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("session.key")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25, defect 8: with every place taken, the customer holding the most gives its
    /// oldest to one holding at least two fewer; never to one that would then hold as many.
    #[tokio::test]
    async fn a_full_set_of_live_streams_makes_room_for_a_customer_holding_few() {
        let live = LiveStreams::with_cap(4);
        let hoarded: Vec<LivePlace> = (0..4).map(|_| live.open("hoarder").unwrap()).collect();
        let first = live
            .open("b")
            .expect("the hoarder holds 4, b none: one is given up");
        assert!(hoarded[0].taken() && !hoarded[1].taken(), "the hoarder's oldest");
        tokio::time::timeout(Duration::from_secs(1), hoarded[0].wait_taken())
            .await
            .expect("its stream hears of it");
        let second = live.open("b").expect("3 against 1");
        assert!(hoarded[1].taken());
        assert!(
            live.open("b").is_none(),
            "2 against 2: nobody gives up a place for b"
        );
        drop(hoarded);
        // The places given up were counted out once: two are free again.
        assert!(live.open("c").is_some() && live.open("c").is_some());
        assert!(!first.taken() && !second.taken());
    }

    /// Issue 25, defect 6: a new order never takes an id an order in the view has, nor one this
    /// instance handed out before its view showed it.
    #[test]
    fn a_new_order_never_takes_an_id_already_held() {
        let dir = tempfile::tempdir().unwrap();
        let view = ViewStore::open(&dir.path().join("view.db")).unwrap();
        let codes = crate::domain::StatusCodes::default();
        view.apply_status(&codes, "0000a11c", 100, 1, None).unwrap();
        let handed_out = HandedOut::default();
        let script = |ids: &'static [u32]| {
            let mut it = ids.iter();
            move || OrderId::from_u32(*it.next().expect("enough draws"))
        };
        let id = fresh_order_id(&view, &handed_out, script(&[0xa11c, 0xb0b]));
        assert_eq!(
            id.unwrap().as_str(),
            "00000b0b",
            "the view's order's id is drawn again"
        );
        let id = fresh_order_id(&view, &handed_out, script(&[0xb0b, 0xa11c, 0xca401]));
        assert_eq!(id.unwrap().as_str(), "000ca401", "nor one handed out before");
        let taken = [0xa11c; ID_DRAWS];
        let mut it = taken.iter();
        assert!(fresh_order_id(&view, &handed_out, || OrderId::from_u32(*it.next().unwrap())).is_none());
    }

    #[test]
    fn live_streams_are_capped_per_customer_and_in_all() {
        let live = LiveStreams::default();
        let mine: Vec<_> = (0..LIVE_PER_CUSTOMER).map(|_| live.open("a").unwrap()).collect();
        assert!(live.open("a").is_none(), "one customer's cap");
        drop(mine);
        assert!(live.open("a").is_some(), "closing makes room");
        let all: Vec<_> = (0..LIVE_TOTAL)
            .map(|i| live.open(&i.to_string()).unwrap())
            .collect();
        assert!(live.open("someone else").is_none(), "the total cap");
        drop(all);
        assert_eq!(live.0.lock().unwrap().total, 0);
        assert!(live.0.lock().unwrap().per_customer.is_empty());
        // Few connections, fewer streams: a quarter of them.
        let small = LiveStreams::for_connections(32);
        let eight: Vec<_> = (0..8).map(|i| small.open(&i.to_string()).unwrap()).collect();
        assert!(small.open("x").is_none());
        drop(eight);
    }
}
