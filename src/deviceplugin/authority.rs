//! The old-kubelet `:authority` quirk, worked around below h2 (docs/facts/k8s.md#grpc-authority): kubelets before 1.26 (grpc-go) send the plugin socket's path
//! (`/var/lib/kubelet/device-plugins/cchost-...sock`) as the HTTP/2 `:authority`, which
//! h2 rejects as a malformed request, so such a kubelet could register the plugin but
//! never call it.
//!
//! [`AuthorityShim`] wraps each accepted unix connection and, before h2 reads the
//! client's bytes, overwrites the value of every literal `:authority` header field in
//! the client's header blocks with as many `x` as it had bytes, sent as a plain
//! (non-Huffman) HPACK string. The length prefix keeps its value, so every length —
//! string, header block, frame — stays as it was and nothing else in the stream moves.
//! On a unix socket the authority means nothing (the plugin serves one socket); h2 only
//! needs it to be well-formed. Because the rewrite happens before h2's HPACK decoder,
//! the value h2 stores in its dynamic table is the rewritten one, so later requests that
//! refer to it by index are fine too.
//!
//! What is recognised: `:authority` as a literal whose name is the static-table index 1
//! (what grpc-go and every HPACK encoder send) or a plain literal name. A Huffman-coded
//! literal *name* `:authority` is left alone (that would need a Huffman decoder; no
//! encoder is known to send it, the static index is always shorter).
//!
//! The byte stream is cut into frames (9-byte header, RFC 9113 §4.1); a header block
//! (HEADERS plus CONTINUATION frames up to END_HEADERS, padding and priority fields
//! skipped) is held back until it is complete, since a field may straddle frames, then
//! rewritten in place and passed on. Every other frame streams through unchanged as its
//! bytes arrive. A stream the shim cannot follow (a frame inside a header block that is
//! not CONTINUATION, a block over 1 MiB) is from then on passed through as it is, for
//! h2 to reject.
//!
//! **Why it is kept (issue 12.7), and when it goes.** It is hand-written protocol code,
//! so it was weighed against the alternatives: patching h2 (what Akri does) means
//! carrying a fork of a crate tonic pins; a gRPC proxy in front of the plugin adds a
//! process and a hop to every Allocate. The shim is ~200 lines that never allocate per
//! byte, is tested against the real tonic service, and is fuzzed (fuzz/, target
//! `hpack_authority`). Remove it when either holds: cchost's supported kubelet floor is
//! 1.26 or later (docs/deviceplugin.md), or h2 accepts a `:authority` that is not a
//! valid authority (then the unit test that expects RST_STREAM without the shim fails
//! and says so).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Most bytes of one header block held back (h2's own header-list limit is far lower).
const MAX_HELD: usize = 1 << 20;
/// HPACK static table index of `:authority` (RFC 7541 Appendix A).
const AUTHORITY_INDEX: u64 = 1;

/// Cuts the client's byte stream into frames and rewrites header blocks.
#[derive(Debug, Default)]
struct Rewriter {
    /// Bytes received and not yet handed on.
    input: Vec<u8>,
    /// Bytes ready to hand to h2.
    output: Vec<u8>,
    /// Where the preface stands (0..=24).
    preface: usize,
    /// Frames of an unfinished header block, and where its fragments lie in them.
    block: Vec<u8>,
    fragments: Vec<(usize, usize)>,
    /// Payload bytes left of a frame that passes through.
    skip: usize,
    /// The framing went wrong: pass everything through.
    lost: bool,
}

impl Rewriter {
    fn push(&mut self, data: &[u8]) {
        if self.lost {
            self.output.extend_from_slice(data);
            return;
        }
        self.input.extend_from_slice(data);
        if self.preface < PREFACE_LEN {
            let n = (PREFACE_LEN - self.preface).min(self.input.len());
            self.output.extend(self.input.drain(..n));
            self.preface += n;
        }
        while self.preface == PREFACE_LEN {
            // The rest of a frame that passes through unchanged.
            if self.skip > 0 {
                let n = self.skip.min(self.input.len());
                self.output.extend(self.input.drain(..n));
                self.skip -= n;
                if self.skip > 0 {
                    return;
                }
                continue;
            }
            if self.input.len() < FRAME_HEADER {
                return;
            }
            let len = usize::from(self.input[0]) << 16
                | usize::from(self.input[1]) << 8
                | usize::from(self.input[2]);
            let kind = self.input[3];
            let in_block = !self.fragments.is_empty();
            if !in_block && kind != HEADERS {
                // Not part of a header block: stream it on without holding it.
                self.output.extend(self.input.drain(..FRAME_HEADER));
                self.skip = len;
                continue;
            }
            if self.block.len() + FRAME_HEADER + len > MAX_HELD {
                // Far beyond any header list h2 accepts: h2 will refuse it anyway.
                let held = std::mem::take(&mut self.block);
                self.fragments.clear();
                self.lose(held);
                self.output.append(&mut self.input);
                return;
            }
            if self.input.len() < FRAME_HEADER + len {
                return;
            }
            let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
            self.frame(frame);
            if self.lost {
                self.output.append(&mut self.input);
                return;
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let in_block = !self.fragments.is_empty();
        match kind {
            HEADERS if !in_block => {
                let mut start = FRAME_HEADER;
                let mut end = frame.len();
                if flags & PADDED != 0 {
                    let Some(&pad) = frame.get(start) else {
                        return self.lose(frame);
                    };
                    start += 1;
                    end = match end.checked_sub(usize::from(pad)) {
                        Some(e) if e >= start => e,
                        _ => return self.lose(frame),
                    };
                }
                if flags & PRIORITY != 0 {
                    start += 5;
                    if start > end {
                        return self.lose(frame);
                    }
                }
                self.hold(frame, start, end, flags);
            }
            CONTINUATION if in_block => {
                let end = frame.len();
                self.hold(frame, FRAME_HEADER, end, flags);
            }
            // Anything else inside a header block breaks RFC 9113 §6.10: h2 says so.
            _ if in_block => {
                let mut held = std::mem::take(&mut self.block);
                self.fragments.clear();
                held.extend_from_slice(&frame);
                self.lose(held);
            }
            _ => self.output.extend_from_slice(&frame),
        }
    }

    fn hold(&mut self, frame: Vec<u8>, start: usize, end: usize, flags: u8) {
        let base = self.block.len();
        self.block.extend_from_slice(&frame);
        self.fragments.push((base + start, base + end));
        if flags & END_HEADERS != 0 {
            let mut hpack: Vec<u8> = Vec::new();
            for &(s, e) in &self.fragments {
                hpack.extend_from_slice(&self.block[s..e]);
            }
            rewrite_authority(&mut hpack);
            let mut at = 0;
            for &(s, e) in &self.fragments {
                self.block[s..e].copy_from_slice(&hpack[at..at + (e - s)]);
                at += e - s;
            }
            self.output.append(&mut self.block);
            self.fragments.clear();
        }
    }

    fn lose(&mut self, bytes: Vec<u8>) {
        self.lost = true;
        self.output.extend_from_slice(&bytes);
    }
}

/// An HPACK integer with an `n`-bit prefix at `*at` (RFC 7541 §5.1).
fn integer(b: &[u8], at: &mut usize, n: u32) -> Option<u64> {
    let max = (1u64 << n) - 1;
    let mut v = u64::from(*b.get(*at)?) & max;
    *at += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*at)?;
        *at += 1;
        v = v.checked_add((u64::from(byte) & 0x7f).checked_shl(shift)?)?;
        if byte & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
        if shift > 56 {
            return None;
        }
    }
}

/// A string literal at `*at`: (huffman bit position, payload range).
fn string(b: &[u8], at: &mut usize) -> Option<(usize, usize, usize)> {
    let flag = *at;
    let len = usize::try_from(integer(b, at, 7)?).ok()?;
    let start = *at;
    let end = start.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    *at = end;
    Some((flag, start, end))
}

/// Rewrites every literal `:authority` value of one header block in place; stops at
/// the first thing it cannot parse (h2 then reports it).
pub fn rewrite_authority(b: &mut [u8]) {
    let mut at = 0;
    while at < b.len() {
        let first = b[at];
        let prefix = if first & 0x80 != 0 {
            // Indexed field: nothing literal.
            if integer(b, &mut at, 7).is_none() {
                return;
            }
            continue;
        } else if first & 0xc0 == 0x40 {
            6 // literal with incremental indexing
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update.
            if integer(b, &mut at, 5).is_none() {
                return;
            }
            continue;
        } else {
            4 // literal without indexing / never indexed
        };
        let Some(index) = integer(b, &mut at, prefix) else {
            return;
        };
        let is_authority = if index == 0 {
            let Some((flag, s, e)) = string(b, &mut at) else {
                return;
            };
            b[flag] & 0x80 == 0 && &b[s..e] == b":authority"
        } else {
            index == AUTHORITY_INDEX
        };
        let Some((flag, s, e)) = string(b, &mut at) else {
            return;
        };
        if is_authority {
            // Same length, plain string: clear the Huffman bit, keep the length bits.
            b[flag] &= 0x7f;
            b[s..e].fill(b'x');
        }
    }
}

/// [`crate::fuzzing::hpack_stream`]: the rewriter fed in pieces, then ended as
/// [`AuthorityShim`] ends it at EOF.
pub(crate) fn feed_for_fuzzing(input: &[u8], cuts: &[u8]) -> Vec<u8> {
    let mut rw = Rewriter::default();
    let mut out = Vec::new();
    let mut rest = input;
    for &c in cuts {
        if c == 0 || rest.is_empty() {
            break;
        }
        let n = usize::from(c).min(rest.len());
        rw.push(&rest[..n]);
        rest = &rest[n..];
        out.append(&mut rw.output);
    }
    rw.push(rest);
    out.append(&mut rw.output);
    out.append(&mut rw.block);
    out.append(&mut rw.input);
    out
}

/// A connection whose client-to-server bytes pass through the `:authority` rewrite.
pub(crate) struct AuthorityShim<T> {
    inner: T,
    rw: Rewriter,
}

impl<T> AuthorityShim<T> {
    pub fn new(inner: T) -> Self {
        AuthorityShim {
            inner,
            rw: Rewriter::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityShim<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rw.output.is_empty() {
                let n = this.rw.output.len().min(buf.remaining());
                buf.put_slice(&this.rw.output[..n]);
                this.rw.output.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        // EOF: hand on whatever was held back, then EOF.
                        this.rw.output.append(&mut this.rw.block);
                        this.rw.output.append(&mut this.rw.input);
                        this.rw.fragments.clear();
                        if this.rw.output.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.rw.push(rb.filled());
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityShim<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityShim<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &[u8] = b"/var/lib/kubelet/device-plugins/cchost-nvidia.com-pgpu.sock";

    /// `:authority` as literal-with-indexing, name index 1, plain value.
    fn authority_field(value: &[u8], huffman: bool) -> Vec<u8> {
        let mut v = vec![0x41, value.len() as u8 | if huffman { 0x80 } else { 0 }];
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn rewrites_the_authority_value_and_nothing_else() {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (indexed)
        block.extend(authority_field(PATH, false));
        block.extend([0x40, 0x02]); // literal name "te", value "trailers"
        block.extend(b"te");
        block.extend([0x08]);
        block.extend(b"trailers");
        let before = block.clone();
        rewrite_authority(&mut block);
        assert_eq!(block.len(), before.len());
        let value_at = 4;
        assert_eq!(&block[..value_at], &before[..value_at]);
        assert!(
            block[value_at..value_at + PATH.len()]
                .iter()
                .all(|&c| c == b'x')
        );
        assert_eq!(
            &block[value_at + PATH.len()..],
            &before[value_at + PATH.len()..]
        );
    }

    #[test]
    fn a_huffman_value_becomes_plain_and_a_long_length_keeps_its_bytes() {
        let long = vec![b'/'; 300]; // length needs a multi-byte integer
        let mut block = vec![0x41, 0xff];
        let mut rest = 300 - 127;
        while rest >= 128 {
            block.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        block.push(rest as u8);
        let len_bytes = block.len();
        block.extend(&long);
        rewrite_authority(&mut block);
        assert_eq!(block[1], 0x7f, "huffman bit cleared, prefix kept");
        assert_eq!(block.len(), len_bytes + 300);
        assert!(block[len_bytes..].iter().all(|&c| c == b'x'));
        // A literal name ":authority" (not indexed) is recognised too.
        let mut lit = vec![0x00, 10];
        lit.extend(b":authority");
        lit.push(3);
        lit.extend(b"a/b");
        rewrite_authority(&mut lit);
        assert_eq!(&lit[lit.len() - 3..], b"xxx");
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            kind,
            flags,
        ];
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_field_split_over_continuation_and_fed_byte_by_byte_is_rewritten() {
        let field = authority_field(PATH, false);
        let (a, b) = field.split_at(10);
        // HEADERS with padding (3 bytes) and priority, then a CONTINUATION.
        let mut p = vec![3u8];
        p.extend([0, 0, 0, 0, 16]);
        p.extend(a);
        p.extend([0, 0, 0]);
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes through
        stream.extend(frame(HEADERS, PADDED | PRIORITY, 1, &p));
        stream.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        // A DATA frame streams through as its bytes come, before it is complete.
        let data = frame(0x0, 0x1, 1, &[7u8; 40]);
        stream.extend(&data[..20]);
        let mut rw = Rewriter::default();
        for byte in &stream {
            rw.push(std::slice::from_ref(byte));
        }
        assert_eq!(rw.output.len(), stream.len(), "held back nothing complete");
        rw.push(&data[20..]);
        stream.extend(&data[20..]);
        let out = rw.output;
        assert_eq!(out.len(), stream.len());
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("/var/lib"), "{text}");
        assert_eq!(out.iter().filter(|&&c| c == b'x').count(), PATH.len());
        // Only the value bytes changed.
        let changed = out.iter().zip(&stream).filter(|(a, b)| a != b).count();
        assert!(changed <= PATH.len(), "{changed}");
    }

    /// A gRPC request as an old kubelet (grpc-go) sends it, hand-encoded: HPACK
    /// without Huffman, `:authority` = the socket path.
    fn old_kubelet_request() -> Vec<u8> {
        let mut h = vec![0x83, 0x86]; // :method POST, :scheme http
        let path = b"/v1beta1.DevicePlugin/GetDevicePluginOptions";
        h.extend([0x04, path.len() as u8]); // :path, literal without indexing
        h.extend(path);
        h.extend(authority_field(PATH, false));
        h.extend([0x0f, 0x10, 16]); // content-type (static 31), literal without indexing
        h.extend(b"application/grpc");
        h.extend([0x00, 2]);
        h.extend(b"te");
        h.extend([8]);
        h.extend(b"trailers");
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        out.extend(frame(HEADERS, END_HEADERS, 1, &h));
        out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA: empty message, END_STREAM
        out
    }

    /// Serves the real plugin service on a unix socket, with or without the shim,
    /// sends the request and returns the type of the first frame the server sends on
    /// stream 1 (1 = HEADERS: answered; 3 = RST_STREAM: refused).
    async fn first_answer(shim: bool) -> u8 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("p.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let (_dtx, drx) = tokio::sync::watch::channel(super::super::state::DeviceList::default());
        let (_stx, srx) = tokio::sync::watch::channel(false);
        let svc =
            super::super::service::PluginService::new("nvidia.com/pgpu".into(), drx, false, srx);
        let router = tonic::transport::Server::builder()
            .add_service(super::super::api::device_plugin_server::DevicePluginServer::new(svc));
        let server = if shim {
            tokio::spawn(router.serve_with_incoming(tokio_stream::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |c| c.map(AuthorityShim::new),
            )))
        } else {
            tokio::spawn(
                router
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
            )
        };
        let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
        c.write_all(&old_kubelet_request()).await.unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let mut head = [0u8; FRAME_HEADER];
                c.read_exact(&mut head).await.unwrap();
                let len =
                    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                c.read_exact(&mut payload).await.unwrap();
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                if stream == 1 || head[3] == 0x7 {
                    return head[3];
                }
            }
        })
        .await
        .unwrap();
        server.abort();
        answer
    }

    #[tokio::test]
    async fn h2_refuses_a_path_authority_and_the_shim_makes_the_call_work() {
        assert_eq!(
            first_answer(false).await,
            0x3,
            "without the shim h2 resets the stream"
        );
        assert_eq!(
            first_answer(true).await,
            HEADERS,
            "with the shim the call is answered"
        );
    }
}
