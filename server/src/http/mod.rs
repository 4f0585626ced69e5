//! HTTP: the EC2 endpoint (which also answers IAM, chosen by the SigV4 credential scope's
//! service), and admin endpoints under `/_ec2d/`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::api::Api;
use crate::api::iam;
use crate::api::iam::credentials::StoreSessionKeys;
use crate::auth::{self, Keyring, RequestParts};
use crate::error::ApiError;
use crate::protocol::query::QueryNode;
use crate::protocol::xml;

/// Largest request body accepted; EC2's own limit for a Query request is in this region.
const MAX_BODY: usize = 10 * 1024 * 1024;
const API_VERSION: &str = "2016-11-15";

pub struct Server {
    pub api: Api,
    pub keys: Keyring,
    pub started: Instant,
}

type Body = Full<Bytes>;

fn reply(status: u16, content_type: &str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// The service a request is for, which decides the shape of its error document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Ec2,
    Iam,
}

fn error_reply(e: &ApiError, request_id: &str, service: Service) -> Response<Body> {
    let body = match service {
        Service::Ec2 => xml::error(&e.code, &e.message, request_id),
        Service::Iam => iam::error_body(e, request_id),
    };
    reply(e.status, "text/xml;charset=UTF-8", body)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(handle(server, peer, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                // A client that shuts its sending side after the request (nc, some scripts)
                // still gets its answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(server: Arc<Server>, _peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let path = req.uri().path().to_string();
    if path.starts_with("/_ec2d/") {
        return admin(&server, &path);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::new("RequestEntityTooLarge", "The request body is too large.")
                .with_status(413);
            return error_reply(&e, &request_id, Service::Ec2);
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let outcome = api_request(
        &server,
        &parts.method,
        &parts.headers,
        &path_and_query,
        &body,
        &request_id,
    );
    let (resp, action, account) = match outcome {
        Ok((body, action, account)) => {
            (reply(200, "text/xml;charset=UTF-8", body), action, account)
        }
        Err((e, action, account, service)) => {
            (error_reply(&e, &request_id, service), action, account)
        }
    };
    tracing::info!(
        action = %action,
        account = %account,
        status = resp.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        request_id = %request_id,
        "request"
    );
    resp
}

/// (body, action, account) or (error, action, account, whose envelope).
type Outcome = Result<(String, String, String), (ApiError, String, String, Service)>;

fn api_request(
    server: &Server,
    method: &Method,
    headers: &http::HeaderMap,
    path_and_query: &str,
    body: &[u8],
    request_id: &str,
) -> Outcome {
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.starts_with("X-Amz-"))
        .collect();
    if *method == Method::POST {
        pairs.extend(form_urlencoded::parse(body).into_owned());
    }
    let mut params = QueryNode::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let action = params.take_value("Action").unwrap_or_default();
    let version = params.take_value("Version");

    let req = RequestParts {
        method: method.as_str(),
        path_and_query,
        headers,
        body,
    };
    let sessions = StoreSessionKeys(&server.api.store);
    let caller = match auth::verify_with(&server.keys, &sessions, &req, SystemTime::now()) {
        Ok(c) => c,
        Err(e) => {
            // A request that fails authentication is still answered in its service's words.
            return Err(match auth::scope_service(&req).as_deref() {
                Some("iam") => (iam::auth_error(e), action, "-".into(), Service::Iam),
                _ => (e.into(), action, "-".into(), Service::Ec2),
            });
        }
    };
    if caller.service == "iam" {
        return iam::handle(
            &server.api,
            &caller.account,
            &action,
            version.as_deref(),
            params,
            request_id,
        )
        .map(|body| (body, action.clone(), caller.account.clone()))
        .map_err(|e| (e, action.clone(), caller.account.clone(), Service::Iam));
    }
    let fail = |e: ApiError| Err((e, action.clone(), caller.account.clone(), Service::Ec2));
    if caller.service != "ec2" {
        return fail(ApiError::auth(
            "AuthFailure",
            format!(
                "Credential should be scoped to correct service: 'ec2', not '{}'.",
                caller.service
            ),
        ));
    }
    if action.is_empty() {
        return fail(ApiError::new(
            "MissingAction",
            "The request must contain the parameter Action",
        ));
    }
    match version.as_deref() {
        None => return fail(ApiError::missing("Version")),
        Some(API_VERSION) => {}
        Some(v) => {
            return fail(ApiError::new(
                "InvalidParameterValue",
                format!(
                    "Value ({v}) for parameter Version is invalid. Only {API_VERSION} is supported."
                ),
            ));
        }
    }
    match server
        .api
        .handle(&caller.account, &caller.region, &action, params, request_id)
    {
        Ok(body) => Ok((body, action, caller.account)),
        Err(e) => fail(e),
    }
}

fn admin(server: &Server, path: &str) -> Response<Body> {
    match path {
        "/_ec2d/health" => {
            let body = serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "apiVersion": API_VERSION,
                "uptimeSeconds": server.started.elapsed().as_secs(),
                "engine": server.api.compute.engine_name,
                "engineUnavailable": server.api.compute.unavailable_reason(),
                "host": server.api.compute.host,
            });
            reply(200, "application/json", body.to_string())
        }
        _ => reply(
            404,
            "application/json",
            "{\"error\":\"not found\"}".to_string(),
        ),
    }
}
