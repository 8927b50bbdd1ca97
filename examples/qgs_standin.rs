//! A stand-in for Intel's QGS, for cchost's tests. It speaks the documented wire
//! protocol (4-byte big-endian length, 16-byte little-endian header v1.1) on a unix
//! socket, written independently of cchost's own encoder, and can be told to misbehave.
//!
//! qgs_standin --no-daemon -n=4 --socket=PATH [--mode=MODE] [--control=FILE]
//!             [--record=FILE] [--next-update=RFC3339] [--exit-after-ms=N]
//!
//! MODE (read again from --control FILE before every request when given):
//!   ok       answer GET_PLATFORM_INFO and GET_COLLATERAL
//!   error    answer with error code 0x12001 (what QGS sends for every failure)
//!   hang     accept and never answer
//!   close    read the request, close without a reply
//!   crash    exit(3) when a request arrives
//!   raw      answer with bare bytes, no framing (a raw-mode quote)
//!   version  answer with header version 2.0
//!
//! Like QGS ≤1.23 it does not remove an existing socket file: binding fails with
//! EADDRINUSE, which is what a stale socket does to the real thing.
// Test support: may unwrap, expect and panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

struct Opts {
    mode: String,
    control: Option<PathBuf>,
    next_update: String,
}

fn main() {
    let mut socket = None;
    let mut mode = "ok".to_string();
    let mut control = None;
    let mut record = None;
    let mut next_update = "2099-01-01T00:00:00Z".to_string();
    let mut exit_after = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for a in &args {
        if let Some(v) = a.strip_prefix("--socket=") {
            socket = Some(PathBuf::from(v));
        } else if let Some(v) = a.strip_prefix("--mode=") {
            mode = v.to_string();
        } else if let Some(v) = a.strip_prefix("--control=") {
            control = Some(PathBuf::from(v));
        } else if let Some(v) = a.strip_prefix("--record=") {
            record = Some(PathBuf::from(v));
        } else if let Some(v) = a.strip_prefix("--next-update=") {
            next_update = v.to_string();
        } else if let Some(v) = a.strip_prefix("--exit-after-ms=") {
            exit_after = v.parse::<u64>().ok();
        } else if a == "--no-daemon" || a.starts_with("-n=") || a.starts_with("-l=") {
            // QGS's own flags.
        } else {
            eprintln!("qgs_standin: unknown argument {a}");
            std::process::exit(2);
        }
    }
    let Some(socket) = socket else {
        eprintln!("qgs_standin: --socket=PATH is required");
        std::process::exit(2);
    };
    if let Some(r) = record {
        let env = std::env::var("QCNL_CONF_PATH").unwrap_or_default();
        let line = format!(
            "args={}\nQCNL_CONF_PATH={env}\npid={}\n",
            args.join(" "),
            std::process::id()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(r)
            .expect("record file");
        f.write_all(line.as_bytes()).expect("record");
    }
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("qgs_standin: bind {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    println!(
        "qgs_standin: listening on {} (mode {mode})",
        socket.display()
    );
    if let Some(ms) = exit_after {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            std::process::exit(4);
        });
    }
    let opts = std::sync::Arc::new(Opts {
        mode,
        control,
        next_update,
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let opts = opts.clone();
        std::thread::spawn(move || serve(conn, &opts));
    }
}

fn current_mode(o: &Opts) -> String {
    o.control
        .as_ref()
        .and_then(|c| std::fs::read_to_string(c).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| o.mode.clone())
}

fn le16(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}
fn le32(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

fn reply(msg_type: u32, error: u32, body: &[u8], major: u16) -> Vec<u8> {
    let size = 16 + body.len() as u32;
    let mut v = Vec::new();
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&le16(major));
    v.extend_from_slice(&le16(1));
    v.extend_from_slice(&le32(msg_type));
    v.extend_from_slice(&le32(size));
    v.extend_from_slice(&le32(error));
    v.extend_from_slice(body);
    v
}

fn serve(mut c: UnixStream, o: &Opts) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut prefix = [0u8; 4];
    if c.read_exact(&mut prefix).is_err() {
        return;
    }
    let n = u32::from_be_bytes(prefix) as usize;
    if !(16..=65536).contains(&n) {
        return;
    }
    let mut msg = vec![0u8; n];
    if c.read_exact(&mut msg).is_err() {
        return;
    }
    let major = u16::from_le_bytes([msg[0], msg[1]]);
    let ty = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let size = u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]) as usize;
    let mode = current_mode(o);
    let out = match mode.as_str() {
        "hang" => {
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        "close" => return,
        "crash" => {
            // Dies like a crashed QGS: the socket file stays behind (stale).
            std::process::exit(3);
        }
        "raw" => {
            // A quote header (version 4, ECDSA-256 key type) with no prefix or header.
            let mut q = vec![4u8, 0, 2, 0, 0x81, 0, 0, 0];
            q.resize(600, 0xaa);
            q
        }
        _ if major != 1 || size != n || ty > 5 => reply(ty + 1, 0x12004, &[], 1),
        "version" => reply(ty + 1, 0, &[], 2),
        "error" => reply(ty + 1, 0x12001, &[], 1),
        _ => match ty {
            4 => {
                let mut b = Vec::new();
                b.extend_from_slice(&le16(4)); // TDQE ISV SVN
                b.extend_from_slice(&le16(13)); // PCE ISV SVN
                b.extend_from_slice(&le32(16));
                b.extend_from_slice(&le32(16));
                b.extend_from_slice(&[0x5e; 16]); // QE ID
                b.extend_from_slice(&[0x0b; 16]); // CPU SVN
                reply(5, 0, &b, 1)
            }
            2 => {
                let tcb = format!(
                    "{{\"tcbInfo\":{{\"id\":\"TDX\",\"version\":3,\"nextUpdate\":\"{}\"}},\"signature\":\"00\"}}\0",
                    o.next_update
                );
                let qe = format!(
                    "{{\"enclaveIdentity\":{{\"id\":\"TD_QE\",\"nextUpdate\":\"{}\"}},\"signature\":\"00\"}}\0",
                    o.next_update
                );
                let blobs: [&[u8]; 7] = [
                    b"-----BEGIN CERTIFICATE-----\n",
                    b"root-crl",
                    b"pck-crl",
                    b"-----BEGIN CERTIFICATE-----\n",
                    tcb.as_bytes(),
                    b"-----BEGIN CERTIFICATE-----\n",
                    qe.as_bytes(),
                ];
                let mut b = Vec::new();
                b.extend_from_slice(&le16(3));
                b.extend_from_slice(&le16(1));
                for x in blobs {
                    b.extend_from_slice(&le32(x.len() as u32));
                }
                for x in blobs {
                    b.extend_from_slice(x);
                }
                reply(3, 0, &b, 1)
            }
            _ => reply(ty + 1, 0x12005, &[], 1),
        },
    };
    let _ = c.write_all(&out);
}
