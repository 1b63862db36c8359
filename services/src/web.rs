//! The HTTP endpoint: place an order and read it as JSON, and the original's `/health-check`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::clock::now_ms;
use crate::command::{place_order, PlaceError};
use crate::config::SysConfig;
use crate::domain::{OrderId, OrderRequest};
use crate::store::{OrderRow, ViewStore};
use crate::transport::Transport;

/// What the handlers share.
pub struct AppState<T> {
    pub transport: T,
    pub sys: Arc<SysConfig>,
    pub view: Arc<ViewStore>,
}

/// An error as the client sees it; internals are logged, never shown.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound,
    Unavailable,
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "no such order"),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the order could not be recorded; try again",
            ),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        };
        (code, Json(ErrorBody { error: msg })).into_response()
    }
}

/// The router; state is shared, so tests can call it without a server.
pub fn router<T: Transport>(state: Arc<AppState<T>>) -> Router {
    Router::new()
        .route("/health-check", get(|| async { "Ok" }))
        .route("/api/orders", post(api_place::<T>))
        .route("/api/orders/{order_id}", get(api_order::<T>))
        .with_state(state)
}

#[derive(Serialize)]
struct PlacedBody {
    order_id: String,
}

async fn api_place<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    body: Result<Json<OrderRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PlacedBody>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    match place_order(&st.transport, &st.sys, &req, OrderId::random(), now_ms()).await {
        Ok(p) => Ok((
            StatusCode::CREATED,
            Json(PlacedBody {
                order_id: p.order_id.to_string(),
            }),
        )),
        Err(PlaceError::Invalid(f)) => Err(ApiError::BadRequest(f.to_string())),
        Err(PlaceError::Unavailable(e)) => {
            tracing::warn!(error = %e, "order not placed");
            Err(ApiError::Unavailable)
        }
    }
}

/// An order as the JSON API shows it.
#[derive(Serialize)]
pub struct OrderBody {
    pub order_id: String,
    pub status: Option<i64>,
    pub status_text: String,
    pub stuck: bool,
    pub timeline: Vec<TimelineEntry>,
    pub order: Option<crate::domain::Order>,
    pub ordered_ts: Option<i64>,
}

/// One step an order reached.
#[derive(Serialize)]
pub struct TimelineEntry {
    pub status: i64,
    pub status_text: String,
    pub timestamp: i64,
}

/// The JSON body for an order row.
pub fn order_body(sys: &SysConfig, row: OrderRow) -> OrderBody {
    let text = |code| sys.labels.text(&sys.codes, code);
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
        timeline: row
            .timeline
            .into_iter()
            .map(|(status, timestamp)| TimelineEntry {
                status,
                status_text: text(status),
                timestamp,
            })
            .collect(),
        order: row.details,
        ordered_ts: row.ordered_ts,
    }
}

async fn api_order<T: Transport>(
    State(st): State<Arc<AppState<T>>>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let id: OrderId = order_id.parse().map_err(|_| ApiError::NotFound)?;
    match st.view.order(id.as_str()) {
        Ok(Some(row)) => Ok(Json(order_body(&st.sys, row))),
        Ok(None) => Err(ApiError::NotFound),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
