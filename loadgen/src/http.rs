//! Placing orders through the web app's JSON API (one session per customer).

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;
use pizza::domain::OrderRequest;
use std::collections::HashMap;

pub struct Client {
    base: String,
    http: Hyper<HttpConnector, Full<Bytes>>,
    /// username -> session cookie.
    cookies: HashMap<String, String>,
}

impl Client {
    /// Logs every customer in once.
    pub async fn login_all(base: &str, customers: u32) -> Result<Client> {
        let http = Hyper::builder(TokioExecutor::new()).build_http();
        let mut c = Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            cookies: HashMap::new(),
        };
        for i in 0..customers {
            let user = format!("load{i}");
            let body = serde_json::json!({ "username": user }).to_string();
            let res = c
                .send(Method::POST, "/api/login", None, body)
                .await
                .context("logging in")?;
            if res.status() != StatusCode::OK {
                bail!("login at {} answered {}", c.base, res.status());
            }
            let cookie = session_cookie(&res).context("no session cookie")?;
            c.cookies.insert(user, cookie);
        }
        Ok(c)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: String,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        Ok(self.http.request(req.body(Full::new(Bytes::from(body)))?).await?)
    }

    /// Places one order; returns its id, and whether it was answered "being confirmed" (202: it
    /// may or may not be in the log) and then confirmed by sending it again, as a customer would.
    pub async fn place(&self, req: &OrderRequest) -> Result<(String, bool), SendError> {
        let cookie = self.cookies.get(&req.username).map(String::as_str);
        // No answer: the web app may have placed it.
        let (status, cookie, answer) = self
            .call("/api/orders", cookie, order_body(req))
            .await
            .map_err(SendError::Unknown)?;
        match status {
            StatusCode::CREATED => Ok((answer.order_id, false)),
            StatusCode::ACCEPTED => self
                .confirm(&answer.order_id, cookie)
                .await
                .map(|id| (id, true))
                .map_err(SendError::Unknown),
            // 4xx, 503: the web app says it did not place it.
            _ => Err(SendError::NotPlaced(format!("{status}: {}", answer.text))),
        }
    }

    /// Confirms an order answered 202, with the session that answer set (which holds what to
    /// send again): up to [`CONFIRM_ATTEMPTS`] times, [`CONFIRM_PAUSE`] apart.
    async fn confirm(&self, order_id: &str, mut cookie: Option<String>) -> Result<String, String> {
        let path = format!("/api/orders/{order_id}/confirm");
        for _ in 0..CONFIRM_ATTEMPTS {
            tokio::time::sleep(CONFIRM_PAUSE).await;
            let (status, set, answer) = self.call(&path, cookie.as_deref(), "{}".into()).await?;
            cookie = set.or(cookie);
            match status {
                StatusCode::OK => return Ok(answer.order_id),
                StatusCode::ACCEPTED => continue,
                _ => return Err(format!("confirming {order_id}: {status}: {}", answer.text)),
            }
        }
        Err(format!(
            "order {order_id} still being confirmed after {CONFIRM_ATTEMPTS} attempts"
        ))
    }

    /// A POST of `body`: the status, the session cookie the answer set, and the answer.
    async fn call(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: String,
    ) -> Result<(StatusCode, Option<String>, Answer), String> {
        let res = self
            .send(Method::POST, path, cookie, body)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let set = session_cookie(&res);
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let order_id = if status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            v["order_id"]
                .as_str()
                .map(str::to_owned)
                .ok_or("no order_id in the answer")?
        } else {
            String::new()
        };
        Ok((status, set, Answer { order_id, text }))
    }
}

/// What `POST /api/orders` takes.
fn order_body(req: &OrderRequest) -> String {
    serde_json::json!({
        "sauce": req.sauce, "cheese": req.cheese, "main_topping": req.main_topping,
        "extra_toppings": req.extra_toppings,
    })
    .to_string()
}

/// Why an order was not acknowledged.
#[derive(Debug)]
pub enum SendError {
    /// The shop said it was not placed: nothing was written.
    NotPlaced(String),
    /// Its fate is unknown (no answer, or still being confirmed): it may yet appear.
    Unknown(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotPlaced(e) => write!(f, "not placed: {e}"),
            SendError::Unknown(e) => write!(f, "unknown whether placed: {e}"),
        }
    }
}

/// How many times an order answered "being confirmed" is confirmed, and how far apart.
pub const CONFIRM_ATTEMPTS: u32 = 3;
pub const CONFIRM_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// What an answer said: the order's id (on success) and the body as text.
struct Answer {
    order_id: String,
    text: String,
}

/// The `name=value` of the cookie an answer sets.
fn session_cookie<B>(res: &hyper::Response<B>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use pizza::admin::EmbeddedBroker;
    use pizza::clock::TimeScale;
    use pizza::config::SysConfig;
    use pizza::health::shop_health;
    use pizza::options::ServiceOpts;
    use pizza::shutdown::Shutdown;
    use pizza::transport::kafka::KafkaTransport;
    use pizza::web::app::{bind, serve, WebOpts};
    use pizza::web::session::SessionKey;

    use super::*;

    /// The web app on the embedded broker, with produces that time out after 1.5 s, and a
    /// client logged in as `load0` whose first order has connected the web app's producer.
    async fn shop() -> (EmbeddedBroker, Client, OrderRequest, tokio::task::JoinHandle<()>) {
        let sys = SysConfig::default();
        let broker = EmbeddedBroker::start(&sys).unwrap();
        let mut props = broker.props();
        props.0.push(("message.timeout.ms".into(), "1500".into()));
        let transport = KafkaTransport::new(&props, "loadgen-test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServiceOpts::defaults().service_config(sys, dir.path().to_owned());
        let health = Arc::new(shop_health(transport.clone(), &cfg.sys, TimeScale::REAL, None));
        let opts = WebOpts {
            session_key: Some(SessionKey::random()),
            max_connections: 16,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _dir = dir;
            let (_stop, shutdown) = Shutdown::new();
            let _ = serve(listener, transport, &cfg, &opts, health, shutdown).await;
        });
        let client = Client::login_all(&base, 1).await.unwrap();
        let req = OrderRequest {
            username: "load0".into(),
            sauce: "Tomato".into(),
            cheese: "Gouda".into(),
            main_topping: "Pork".into(),
            extra_toppings: vec![],
        };
        assert!(!client.place(&req).await.unwrap().1, "placed outright");
        (broker, client, req, server)
    }

    /// A 202 ("being confirmed": the produce timed out after the record may have been written)
    /// is confirmed as a customer confirms it; one that stays unconfirmed is of unknown fate, not
    /// "not placed" (the answer before: a 202 counted as a failed send).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_being_confirmed_is_of_unknown_fate_until_confirmed() {
        let (broker, client, req, server) = shop().await;
        // Every answer now comes after the produce's timeout, and after the client's
        // confirmations are over: confirming cannot settle it. (With answers 3 s late the web
        // app's own view, which reads the log, shows the order before the confirmations end,
        // and the order is confirmed: it is in the log.)
        broker.answer_late(Duration::from_secs(30)).unwrap();
        match client.place(&req).await {
            Err(SendError::Unknown(why)) => assert!(why.contains("still being confirmed"), "{why}"),
            other => panic!("expected an order of unknown fate, got {other:?}"),
        }
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_202_is_confirmed_once_answers_are_prompt() {
        let (broker, client, req, server) = shop().await;
        broker.answer_late(Duration::from_secs(3)).unwrap();
        let cookie = client.cookies.get("load0").cloned();
        let (status, cookie, answer) = client
            .call("/api/orders", cookie.as_deref(), order_body(&req))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{}", answer.text);
        broker.answer_late(Duration::ZERO).unwrap();
        let id = client.confirm(&answer.order_id, cookie).await.unwrap();
        assert_eq!(id, answer.order_id);
        server.abort();
    }
}
