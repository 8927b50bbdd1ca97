//! A QGS client: one request per connection, as QGS serves them.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
pub(crate) async fn transact(
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
                // One deadline for the whole exchange, as on the unix socket: the
                // per-call SO_RCVTIMEO alone lets a peer that trickles a byte before
                // each timeout hold this thread for hours (issue 14.10).
                let deadline = Instant::now() + timeout;
                let mut s = VsockStream::connect(cid, port, timeout).map_err(|e| {
                    connect_err(&ep2, HostError::io(PathBuf::from(ep2.to_string()), e))
                })?;
                s.write_all(&req).map_err(|e| io_err(&ep2, e))?;
                read_reply_sync(&mut s, &ep2, timeout, deadline)
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

/// A blocking stream whose reads can be bounded.
pub(crate) trait TimedRead: Read {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()>;
}

impl TimedRead for VsockStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        VsockStream::set_read_timeout(self, timeout)
    }
}

impl TimedRead for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, Some(timeout))
    }
}

/// Reads one framed reply, every read bounded by what is left until `deadline`.
fn read_reply_sync<R: TimedRead>(
    r: &mut R,
    ep: &Endpoint,
    timeout: Duration,
    deadline: Instant,
) -> Result<Vec<u8>, QgsError> {
    let timed_out = || QgsError::Timeout {
        endpoint: ep.clone(),
        timeout,
    };
    let read_full = |r: &mut R, buf: &mut [u8]| -> Result<(), QgsError> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            r.set_read_timeout(left).map_err(|e| io_err(ep, e))?;
            match r.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(io_err(ep, std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out());
                }
                Err(e) => return Err(io_err(ep, e)),
            }
        }
        Ok(())
    };
    let mut prefix = [0u8; proto::PREFIX_LEN];
    read_full(r, &mut prefix)?;
    let n = proto::parse_prefix(prefix).map_err(|e| proto_err(ep, e))?;
    let mut msg = vec![0u8; n];
    read_full(r, &mut msg)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Issue 14.10: a peer that sends one byte before each read timeout ends used to
    /// hold the blocking thread for as long as it liked; the whole reply now has one
    /// deadline.
    #[test]
    fn a_trickling_peer_meets_one_overall_deadline() {
        let (mut ours, mut peer) = UnixStream::pair().unwrap();
        let trickler = std::thread::spawn(move || {
            let mut reply = 64u32.to_be_bytes().to_vec();
            reply.extend([0u8; 64]);
            for b in reply {
                if peer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let ep = Endpoint::Vsock { cid: 1, port: 4050 };
        let timeout = Duration::from_millis(200);
        let start = Instant::now();
        let r = read_reply_sync(&mut ours, &ep, timeout, start + timeout);
        let took = start.elapsed();
        assert!(matches!(r, Err(QgsError::Timeout { .. })), "{r:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        drop(ours);
        trickler.join().unwrap();
    }

    #[test]
    fn a_prompt_reply_is_read_whole() {
        let (mut ours, mut peer) = UnixStream::pair().unwrap();
        let mut reply = 16u32.to_be_bytes().to_vec();
        reply.extend(1..=16u8);
        peer.write_all(&reply).unwrap();
        let ep = Endpoint::Vsock { cid: 1, port: 4050 };
        let timeout = Duration::from_secs(5);
        let msg = read_reply_sync(&mut ours, &ep, timeout, Instant::now() + timeout).unwrap();
        assert_eq!(msg, (1..=16u8).collect::<Vec<_>>());
        drop(peer);
        let e = read_reply_sync(&mut ours, &ep, timeout, Instant::now() + timeout).unwrap_err();
        assert!(matches!(e, QgsError::Closed { .. }), "{e:?}");
    }
}
