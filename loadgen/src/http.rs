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
            let cookie = res
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .context("no session cookie")?
                .to_owned();
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

    /// Places one order; returns its id.
    pub async fn place(&self, req: &OrderRequest) -> Result<String, String> {
        let cookie = self.cookies.get(&req.username).map(String::as_str);
        let body = serde_json::json!({
            "sauce": req.sauce, "cheese": req.cheese, "main_topping": req.main_topping,
            "extra_toppings": req.extra_toppings,
        })
        .to_string();
        let res = self
            .send(Method::POST, "/api/orders", cookie, body)
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::CREATED {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        v["order_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no order_id in the answer".into())
    }
}
