//! A small HTTP/1.1 server for the health endpoint (`/healthz`, `/readyz`) and the
//! metrics endpoint (`/metrics`): one GET per connection, answered and closed. Kubelet's
//! httpGet probes and Prometheus' scraper need no more. Requests are bounded (8 KiB of
//! head, 5 s to send it, 32 connections at a time), so a slow or hostile client cannot
//! hold the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::health::Health;
use super::metrics::{CONTENT_TYPE, METRICS};

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;

/// What a listener answers.
#[derive(Clone)]
pub struct Routes {
    /// `/healthz` (liveness) and `/readyz` (readiness).
    pub health: Option<Arc<Health>>,
    /// `/metrics`.
    pub metrics: bool,
}

/// An answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

fn text(status: u16, body: impl Into<String>) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into(),
    }
}

/// The answer to a request head (method and path; the query string is ignored).
pub fn answer(routes: &Routes, head: &str) -> Answer {
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (words.next().unwrap_or_default(), words.next());
    let Some(target) = target else {
        return text(400, "bad request\n");
    };
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return text(405, "only GET\n");
    }
    match (path, &routes.health) {
        // Liveness: the runtime answers. A blocked runtime does not answer at all,
        // and the probe's timeout says so.
        ("/healthz" | "/livez", Some(_)) => text(200, "ok\n"),
        ("/readyz", Some(h)) => {
            let r = h.readiness();
            text(if r.ready { 200 } else { 503 }, r.text())
        }
        ("/metrics", _) if routes.metrics => Answer {
            status: 200,
            content_type: CONTENT_TYPE,
            body: METRICS.render(),
        },
        _ => text(404, "not found\n"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn handle(mut conn: TcpStream, routes: Routes) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(READ_TIMEOUT, read).await, Ok(true)) {
        return;
    }
    let head = String::from_utf8_lossy(&head);
    let a = answer(&routes, &head);
    let is_head = head.starts_with("HEAD ");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.status,
        reason(a.status),
        a.content_type,
        a.body.len()
    );
    if !is_head {
        out.push_str(&a.body);
    }
    let _ = tokio::time::timeout(READ_TIMEOUT, conn.write_all(out.as_bytes())).await;
    let _ = conn.shutdown().await;
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, routes: Routes, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else {
                    // EMFILE and the like: wait a moment rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue; // too many at once: drop this one
                };
                let routes = routes.clone();
                tokio::spawn(async move {
                    handle(conn, routes).await;
                    drop(permit);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::health::State;

    #[test]
    fn routes() {
        let h = Arc::new(Health::default());
        h.set("passthrough", State::NotServing("boom".into()));
        let r = Routes {
            health: Some(h.clone()),
            metrics: false,
        };
        assert_eq!(answer(&r, "GET /healthz HTTP/1.1\r\n\r\n").status, 200);
        let a = answer(&r, "GET /readyz?verbose HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, 503);
        assert!(
            a.body.contains("passthrough: not serving: boom"),
            "{}",
            a.body
        );
        assert_eq!(answer(&r, "GET /metrics HTTP/1.1\r\n\r\n").status, 404);
        assert_eq!(answer(&r, "POST /readyz HTTP/1.1\r\n\r\n").status, 405);
        assert_eq!(answer(&r, "garbage").status, 400);
        h.set("passthrough", State::Serving);
        assert_eq!(answer(&r, "GET /readyz HTTP/1.1\r\n\r\n").status, 200);
        let m = Routes {
            health: None,
            metrics: true,
        };
        assert_eq!(answer(&m, "GET /healthz HTTP/1.1\r\n\r\n").status, 404);
        let a = answer(&m, "GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(a.status, 200);
        assert!(a.body.contains("# TYPE cchost_ready gauge"), "{}", a.body);
    }
}
