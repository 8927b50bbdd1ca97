//! A QGS client: one request per connection, as QGS serves them.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::proto::{self, Collateral, MsgType, PlatformInfo, ProtoError};
use crate::host::socket::VsockStream;
use crate::host::{HostError, HostRoot};

/// Where QGS listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum Endpoint {
    /// A unix socket at a host path (`/var/run/tdx-qgs/qgs.socket`).
    Unix { path: PathBuf },
    /// vsock; from the host itself the CID is 1 (`VMADDR_CID_LOCAL`).
    Vsock { cid: u32, port: u32 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix { path } => write!(f, "unix:{}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// Why a QGS request failed, in terms a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum QgsError {
    #[error("{endpoint}: no socket there (QGS not running, or running in vsock mode)")]
    NoSocket { endpoint: Endpoint },
    #[error("{endpoint}: connection refused (a stale socket left by a QGS that is gone)")]
    Refused { endpoint: Endpoint },
    #[error(
        "{endpoint}: permission denied (the socket is 0660 qgsd:qgsd; run as root or in that group)"
    )]
    Denied { endpoint: Endpoint },
    #[error("{endpoint}: cannot connect: {source}")]
    Connect {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: no reply within {}s (QGS hung?)", timeout.as_secs_f32())]
    Timeout {
        endpoint: Endpoint,
        timeout: Duration,
    },
    #[error(
        "{endpoint}: closed the connection without a reply (QGS could not build an answer, or crashed)"
    )]
    Closed { endpoint: Endpoint },
    #[error("{endpoint}: {source}")]
    Io {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: bad reply: {source}")]
    Proto {
        endpoint: Endpoint,
        #[source]
        source: ProtoError,
    },
    #[error(transparent)]
    Host(#[from] HostError),
}

impl QgsError {
    /// The QGS error code when QGS answered with one.
    pub fn qgs_code(&self) -> Option<u32> {
        match self {
            QgsError::Proto {
                source: ProtoError::Qgs { code },
                ..
            } => Some(*code),
            _ => None,
        }
    }
}

/// Sends one framed request and returns the reply message (header + body, no prefix).
pub async fn transact(
    host: &HostRoot,
    ep: &Endpoint,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, QgsError> {
    match ep {
        Endpoint::Unix { path } => {
            let fut = async {
                let mut s = host
                    .connect_unix(path)
                    .await
                    .map_err(|e| connect_err(ep, e))?;
                s.write_all(request).await.map_err(|e| io_err(ep, e))?;
                read_reply_async(&mut s, ep).await
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(QgsError::Timeout {
                    endpoint: ep.clone(),
                    timeout,
                }),
            }
        }
        Endpoint::Vsock { cid, port } => {
            let (cid, port, ep2, req) = (*cid, *port, ep.clone(), request.to_vec());
            tokio::task::spawn_blocking(move || {
                let mut s = VsockStream::connect(cid, port, timeout).map_err(|e| {
                    connect_err(&ep2, HostError::io(PathBuf::from(ep2.to_string()), e))
                })?;
                s.write_all(&req).map_err(|e| io_err(&ep2, e))?;
                read_reply_sync(&mut s, &ep2, timeout)
            })
            .await
            .map_err(|e| QgsError::Io {
                endpoint: ep.clone(),
                source: std::io::Error::other(e.to_string()),
            })?
        }
    }
}

fn connect_err(ep: &Endpoint, e: HostError) -> QgsError {
    let endpoint = ep.clone();
    match e {
        HostError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => QgsError::NoSocket { endpoint },
            std::io::ErrorKind::ConnectionRefused => QgsError::Refused { endpoint },
            std::io::ErrorKind::PermissionDenied => QgsError::Denied { endpoint },
            _ => QgsError::Connect { endpoint, source },
        },
        other => QgsError::Host(other),
    }
}

fn io_err(ep: &Endpoint, source: std::io::Error) -> QgsError {
    match source.kind() {
        std::io::ErrorKind::UnexpectedEof => QgsError::Closed {
            endpoint: ep.clone(),
        },
        _ => QgsError::Io {
            endpoint: ep.clone(),
            source,
        },
    }
}

fn proto_err(ep: &Endpoint, source: ProtoError) -> QgsError {
    QgsError::Proto {
        endpoint: ep.clone(),
        source,
    }
}

async fn read_reply_async<R: AsyncRead + Unpin>(
    r: &mut R,
    ep: &Endpoint,
) -> Result<Vec<u8>, QgsError> {
    let mut prefix = [0u8; proto::PREFIX_LEN];
    r.read_exact(&mut prefix).await.map_err(|e| io_err(ep, e))?;
    // The prefix is validated before it sizes any buffer.
    let n = proto::parse_prefix(prefix).map_err(|e| proto_err(ep, e))?;
    let mut msg = vec![0u8; n];
    r.read_exact(&mut msg).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            proto_err(
                ep,
                ProtoError::Truncated {
                    at: proto::PREFIX_LEN,
                    needed: n,
                },
            )
        } else {
            io_err(ep, e)
        }
    })?;
    Ok(msg)
}

fn read_reply_sync<R: Read>(
    r: &mut R,
    ep: &Endpoint,
    timeout: Duration,
) -> Result<Vec<u8>, QgsError> {
    let timed_out = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            QgsError::Timeout {
                endpoint: ep.clone(),
                timeout,
            }
        } else {
            io_err(ep, e)
        }
    };
    let mut prefix = [0u8; proto::PREFIX_LEN];
    r.read_exact(&mut prefix).map_err(timed_out)?;
    let n = proto::parse_prefix(prefix).map_err(|e| proto_err(ep, e))?;
    let mut msg = vec![0u8; n];
    r.read_exact(&mut msg).map_err(timed_out)?;
    Ok(msg)
}

/// `GET_PLATFORM_INFO`: the liveness probe (no network behind it).
pub async fn platform_info(
    host: &HostRoot,
    ep: &Endpoint,
    timeout: Duration,
) -> Result<PlatformInfo, QgsError> {
    let msg = transact(host, ep, &proto::platform_info_request(), timeout).await?;
    let (_, body) =
        proto::parse_message(&msg, MsgType::GetPlatformInfoResp).map_err(|e| proto_err(ep, e))?;
    PlatformInfo::parse_body(body).map_err(|e| proto_err(ep, e))
}

/// `GET_COLLATERAL`: exercises QGS → QPL → PCCS.
pub async fn collateral(
    host: &HostRoot,
    ep: &Endpoint,
    fmspc: &[u8],
    pck_ca: &str,
    timeout: Duration,
) -> Result<Collateral, QgsError> {
    let msg = transact(host, ep, &proto::collateral_request(fmspc, pck_ca), timeout).await?;
    let (_, body) =
        proto::parse_message(&msg, MsgType::GetCollateralResp).map_err(|e| proto_err(ep, e))?;
    Collateral::parse_body(body).map_err(|e| proto_err(ep, e))
}
