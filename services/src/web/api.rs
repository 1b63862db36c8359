//! The JSON API for programs (the load generator, scripts): log in, place an order, read it.
//! Same session cookie as the pages; JSON bodies are the CSRF defence (a cross-site form cannot
//! send `application/json` without a preflight the server never allows).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::command::{place_order_as, PlaceError};
use crate::config::SysConfig;
use crate::domain::{OrderId, OrderRequest};
use crate::error::Report;
use crate::store::StoreError;
use crate::transport::Transport;
use crate::view::OrderRow;
use crate::web::pages::utc;
use crate::web::session::Session;
use crate::web::Confirmation;
use crate::web::{owned_order, AppState, MaybeSession};

/// An error as a program sees it; internals are logged, never shown.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// The body could not be taken as JSON: too large (413), wrong content type (415), bad JSON.
    Rejected(axum::extract::rejection::JsonRejection),
    Unauthorized,
    NotFound,
    Unavailable,
    /// The view could not be read: logged with its cause, a 500 for the client.
    Internal(StoreError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let text;
        let (code, msg) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            ApiError::Rejected(r) => {
                text = r.body_text();
                (r.status(), text.as_str())
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "log in first: POST /api/login"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such order"),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the order could not be recorded; try again",
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = %Report(e), "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        (code, Json(ErrorBody { error: msg })).into_response()
    }
}

/// Checks a username as the login form does; returns it trimmed.
pub fn valid_username(raw: &str) -> Result<String, String> {
    crate::domain::valid_username(raw).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
}

pub async fn login<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    body: Result<Json<LoginBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(ApiError::Rejected)?;
    let username = valid_username(&body.username).map_err(ApiError::BadRequest)?;
    let session = Session::logged_in(&username);
    let cookie = session.set_cookie(&st.key);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({ "username": username })),
    )
        .into_response())
}

/// An order as a program sends it; the customer is the session's user.
#[derive(Deserialize)]
pub struct NewOrder {
    sauce: String,
    cheese: String,
    main_topping: String,
    #[serde(default)]
    extra_toppings: Vec<String>,
}

#[derive(Serialize)]
struct PlacedBody {
    order_id: String,
    /// False while the order is being confirmed: it may or may not be in the log, and
    /// `POST /api/orders/{order_id}/confirm` sends it again (idempotently).
    confirmed: bool,
}

pub async fn place<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    body: Result<Json<NewOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let mut session = session
        .filter(|s| s.username.is_some())
        .ok_or(ApiError::Unauthorized)?;
    let Json(o) = body.map_err(ApiError::Rejected)?;
    let req = OrderRequest {
        username: session.username.clone().unwrap_or_default(),
        sauce: o.sauce,
        cheese: o.cheese,
        main_topping: o.main_topping,
        extra_toppings: o.extra_toppings,
    };
    let customer = session.customer_id.clone().unwrap_or_default();
    let Some(id) = st.fresh_order_id(OrderId::random) else {
        return Err(ApiError::Unavailable);
    };
    match place_order_as(&st.transport, &st.sys, (&req, &customer), id, now_ms()).await {
        Ok(p) => {
            st.seen(p.acked).await;
            session.placed(&p.order_id);
            let cookie = session.set_cookie(&st.key);
            let body = Json(PlacedBody {
                order_id: p.order_id.to_string(),
                confirmed: true,
            });
            Ok((StatusCode::CREATED, [(header::SET_COOKIE, cookie)], body).into_response())
        }
        Err(PlaceError::Invalid(f)) => Err(ApiError::BadRequest(f.to_string())),
        Err(PlaceError::Unavailable(e)) => {
            tracing::warn!(error = %Report(&e), "order not placed");
            Err(ApiError::Unavailable)
        }
        Err(e @ PlaceError::Unconfirmed { .. }) => {
            let id = crate::web::being_confirmed(&mut session, &req, e);
            Ok(being_confirmed(&st, &session, &id))
        }
    }
}

/// 202 Accepted: the order may or may not be in the log; confirm it to know.
fn being_confirmed<T>(st: &AppState<T>, session: &Session, order_id: &OrderId) -> Response {
    let body = Json(PlacedBody {
        order_id: order_id.to_string(),
        confirmed: false,
    });
    let cookie = session.set_cookie(&st.key);
    (StatusCode::ACCEPTED, [(header::SET_COOKIE, cookie)], body).into_response()
}

/// An empty JSON object: the body a confirmation sends (JSON, so no cross-site form can send it).
#[derive(Deserialize)]
pub struct ConfirmBody {}

/// Confirms an order answered "being confirmed": 200 once it is in the log, 202 while it still
/// may or may not be (call again), 404 for an order this session neither placed nor is confirming.
pub async fn confirm<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    Path(order_id): Path<String>,
    body: Result<Json<ConfirmBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let mut session = session
        .filter(|s| s.username.is_some())
        .ok_or(ApiError::Unauthorized)?;
    let Json(ConfirmBody {}) = body.map_err(ApiError::Rejected)?;
    let id: OrderId = order_id.parse().map_err(|_| ApiError::NotFound)?;
    match crate::web::confirm(&st, &mut session, &order_id)
        .await
        .map_err(ApiError::Internal)?
    {
        Some(Confirmation::Confirmed) => {
            let body = Json(PlacedBody {
                order_id: id.to_string(),
                confirmed: true,
            });
            let cookie = session.set_cookie(&st.key);
            Ok((StatusCode::OK, [(header::SET_COOKIE, cookie)], body).into_response())
        }
        Some(Confirmation::StillConfirming) => Ok(being_confirmed(&st, &session, &id)),
        None => Err(ApiError::NotFound),
    }
}

pub async fn order<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    MaybeSession(session): MaybeSession,
    Path(order_id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let session = session
        .filter(|s| s.username.is_some())
        .ok_or(ApiError::Unauthorized)?;
    match owned_order(&st, &session, &order_id) {
        Ok(Some(body)) => Ok(Json(body)),
        Ok(None) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::Internal(e)),
    }
}

/// An order as the API and the live page show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderBody {
    pub order_id: String,
    pub status: Option<i64>,
    pub status_text: String,
    pub stuck: bool,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The order was answered "being confirmed" and the view does not show it yet: it may or may
    /// not be in the log (`POST .../confirm` sends it again).
    pub being_confirmed: bool,
    pub timeline: Vec<TimelineEntry>,
    pub order: Option<crate::domain::Order>,
    /// When pizza-ordered was stamped, in epoch milliseconds (`ordered_ts` on the wire).
    #[serde(rename = "ordered_ts")]
    pub ordered_at_ms: Option<i64>,
}

/// One step an order reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub status: i64,
    pub status_text: String,
    pub timestamp: i64,
    /// `timestamp` as UTC text.
    pub time: String,
}

/// The body for an order row (or for an order the view has not seen yet: `row` is `None`).
pub fn order_body(sys: &SysConfig, order_id: &str, row: Option<OrderRow>) -> OrderBody {
    let text = |code| sys.labels.text(&sys.codes, code);
    let row = row.unwrap_or_else(|| OrderRow {
        order_id: order_id.to_owned(),
        status: None,
        details: None,
        ordered_at_ms: None,
        timeline: vec![],
    });
    let (status, stuck) = row
        .status
        .as_ref()
        .map_or((None, false), |s| (Some(s.status), s.stuck));
    let status_text = match (status, stuck) {
        (_, true) => text(sys.codes.stuck),
        (Some(s), false) => text(s),
        (None, false) => text(sys.codes.order_received),
    };
    OrderBody {
        order_id: row.order_id,
        status,
        status_text,
        stuck,
        is_final: status.is_some_and(|s| sys.codes.is_final(s)),
        being_confirmed: false,
        timeline: row
            .timeline
            .into_iter()
            .map(|(status, timestamp)| TimelineEntry {
                status,
                status_text: text(status),
                timestamp,
                time: utc(timestamp),
            })
            .collect(),
        order: row.details,
        ordered_at_ms: row.ordered_at_ms,
    }
}
