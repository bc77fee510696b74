//! Authentication: the `Authorization` header sent up front, and answering a 401's
//! challenge (Basic, or the bearer token flow).

use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

use super::transport::Progress;
use super::{pct_encode, with_query, Client};
use crate::oci::auth::Challenge;
use crate::oci::OciError;

#[derive(Default)]
pub(super) struct AuthState {
    /// The registry asked for Basic: send it up front from now on.
    basic: bool,
    /// The last bearer token obtained (sent up front; a new challenge replaces it).
    bearer: Option<String>,
}

impl Client {
    pub(super) fn auth_header(&self) -> Option<String> {
        let st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &st.bearer {
            return Some(format!("Bearer {t}"));
        }
        match (&self.creds, st.basic) {
            (Some(c), true) => Some(c.basic_header()),
            _ => None,
        }
    }

    /// Answer a 401's challenge; `false` when there is nothing more to try.
    pub(super) async fn answer_challenge(&self, challenge: Option<Challenge>, op: &str) -> Result<bool, OciError> {
        match challenge {
            Some(Challenge::Basic) => {
                let mut st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                if self.creds.is_none() || st.basic {
                    return Ok(false);
                }
                st.basic = true;
                Ok(true)
            }
            Some(Challenge::Bearer { realm, service, scope }) => {
                let token = self.fetch_token(&realm, service.as_deref(), scope.as_deref(), op).await?;
                self.auth.lock().unwrap_or_else(|e| e.into_inner()).bearer = Some(token);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The token flow: `GET realm?service=…&scope=…`, with Basic credentials when there are any
    /// (anonymous tokens otherwise). The answer is `{"token": …}` or `{"access_token": …}`.
    pub(super) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        op: &str,
    ) -> Result<String, OciError> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(self.protocol(op, "bearer realm is not an http(s) URL"));
        }
        if self.repo.scheme == "https" && realm.starts_with("http://") {
            return Err(self.protocol(op, "bearer realm over plain HTTP refused for an HTTPS registry"));
        }
        let mut url = realm.to_string();
        for (k, v) in [("service", service), ("scope", scope)] {
            if let Some(v) = v {
                url = with_query(&url, k, &pct_encode(v));
            }
        }
        let mut b = Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = &self.creds {
            let mut v = HeaderValue::from_str(&c.basic_header())
                .map_err(|_| self.protocol(op, "credentials are not a valid header"))?;
            v.set_sensitive(true);
            b = b.header(header::AUTHORIZATION, v);
        }
        let request = b
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(|e| self.protocol(op, &format!("building the token request: {e}")))?;
        let progress = Progress::new();
        let resp = self
            .with_idle_timeout(self.http.request(request), &progress, op)
            .await?
            .map_err(|e| self.transport_error(op, &e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(OciError::Unauthorized {
                    registry: self.repo.registry.clone(),
                    op: op.to_string(),
                    detail: self.who() + " (token service refused them)",
                })
            }
            s => return Err(self.protocol(op, &format!("token service answered HTTP {}", s.as_u16()))),
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = self.read_capped(resp, 1 << 20, op).await?;
        let t: Token =
            serde_json::from_slice(&body).map_err(|_| self.protocol(op, "token service answer is not JSON"))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol(op, "token service gave no token"))
    }

    pub(super) fn who(&self) -> String {
        match &self.creds {
            None => format!("no credentials for {} (anonymous)", self.repo.registry),
            Some(_) => format!("the credentials for {} were rejected", self.repo.registry),
        }
    }
}
