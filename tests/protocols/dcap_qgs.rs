//! The QGS client against the stand-in QGS over a real unix socket, and the response
//! parser against hostile input (a deterministic randomized loop).
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use crate::support::dcap::{StandIn, tdx_root};
use cchost::dcap::proto::{self, Collateral, MsgType, PlatformInfo, ProtoError};
use cchost::dcap::qgs::{self, Endpoint, QgsError};
use cchost::host::HostRoot;

const SOCK: &str = "/var/run/tdx-qgs/qgs.socket";

fn ep() -> Endpoint {
    Endpoint::Unix { path: SOCK.into() }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn platform_info_and_collateral_from_the_stand_in() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let _qgs = StandIn::start(
        &root.path().join(&SOCK[1..]),
        &["--next-update=2030-01-02T03:04:05Z"],
    );
    let rt = rt();
    let info = rt
        .block_on(qgs::platform_info(&host, &ep(), Duration::from_secs(10)))
        .unwrap();
    assert_eq!(info.qe_id, "5e".repeat(16));
    assert_eq!(info.cpu_svn, "0b".repeat(16));
    assert_eq!((info.tdqe_isvsvn, info.pce_isvsvn), (4, 13));
    let c = rt
        .block_on(qgs::collateral(
            &host,
            &ep(),
            &[0, 0x80, 0x6f, 5, 0, 0],
            "processor",
            Duration::from_secs(10),
        ))
        .unwrap();
    assert_eq!((c.major, c.minor), (3, 1));
    let tcb = String::from_utf8_lossy(&c.tcb_info);
    assert!(tcb.contains("2030-01-02T03:04:05Z"), "{tcb}");
}

#[test]
fn each_misbehaviour_gets_its_own_error() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let control = root.path().join("mode");
    let sock = root.path().join(&SOCK[1..]);
    let rt = rt();
    let t = Duration::from_millis(800);

    // Nothing there.
    let e = rt
        .block_on(qgs::platform_info(&host, &ep(), t))
        .unwrap_err();
    assert!(matches!(e, QgsError::NoSocket { .. }), "{e}");

    let mut qgs = StandIn::start(&sock, &[&format!("--control={}", control.display())]);
    let try_mode = |mode: &str| {
        std::fs::write(&control, mode).unwrap();
        rt.block_on(qgs::platform_info(&host, &ep(), t))
    };
    assert!(try_mode("ok").is_ok());
    let e = try_mode("error").unwrap_err();
    assert_eq!(e.qgs_code(), Some(proto::code::UNEXPECTED), "{e}");
    assert!(e.to_string().contains("0x12001"), "{e}");
    let e = try_mode("hang").unwrap_err();
    assert!(matches!(e, QgsError::Timeout { .. }), "{e}");
    let e = try_mode("close").unwrap_err();
    assert!(matches!(e, QgsError::Closed { .. }), "{e}");
    let e = try_mode("raw").unwrap_err();
    assert!(
        matches!(
            e,
            QgsError::Proto {
                source: ProtoError::TooLarge(_),
                ..
            }
        ),
        "{e}"
    );
    let e = try_mode("version").unwrap_err();
    assert!(
        matches!(
            e,
            QgsError::Proto {
                source: ProtoError::Version { major: 2, .. },
                ..
            }
        ),
        "{e}"
    );
    let e = try_mode("crash").unwrap_err();
    assert!(matches!(e, QgsError::Closed { .. }), "{e}");
    let _ = qgs.child.wait();

    // The crashed stand-in left its socket file: refused (stale socket).
    assert!(sock.exists());
    let e = rt
        .block_on(qgs::platform_info(&host, &ep(), t))
        .unwrap_err();
    assert!(matches!(e, QgsError::Refused { .. }), "{e}");
}

/// A server that answers any request with fixed bytes.
fn serve_bytes(sock: &std::path::Path, reply: Vec<u8>) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let mut req = [0u8; 20];
            let _ = c.read_exact(&mut req);
            let _ = c.write_all(&reply);
        }
    })
}

#[test]
fn hostile_prefix_is_refused_before_allocating() {
    let root = tdx_root();
    let host = HostRoot::new(root.path()).unwrap();
    let sock = root.path().join(&SOCK[1..]);
    // Claims 4 GiB, sends 8 bytes.
    let h = serve_bytes(&sock, vec![0xff, 0xff, 0xff, 0xff, 1, 0, 1, 0]);
    let e = rt()
        .block_on(qgs::platform_info(&host, &ep(), Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            QgsError::Proto {
                source: ProtoError::TooLarge(0xffff_ffff),
                ..
            }
        ),
        "{e}"
    );
    h.join().unwrap();
    std::fs::remove_file(&sock).unwrap();
    // Claims 64 bytes, sends 20 then closes: truncated, not a hang.
    let mut short = proto::response(MsgType::GetPlatformInfoResp, 0, &[0u8; 48]);
    short.truncate(24);
    let h = serve_bytes(&sock, short);
    let e = rt()
        .block_on(qgs::platform_info(&host, &ep(), Duration::from_secs(5)))
        .unwrap_err();
    assert!(
        matches!(
            e,
            QgsError::Proto {
                source: ProtoError::Truncated { .. },
                ..
            }
        ),
        "{e}"
    );
    h.join().unwrap();
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn parse_all(wire: &[u8]) {
    for want in [MsgType::GetPlatformInfoResp, MsgType::GetCollateralResp] {
        if let Ok((_, body)) = proto::parse_framed(wire, want) {
            let _ = PlatformInfo::parse_body(body);
            let _ = Collateral::parse_body(body);
        }
    }
    if wire.len() >= 4 {
        let _ = proto::parse_prefix([wire[0], wire[1], wire[2], wire[3]]);
        let _ = proto::parse_message(&wire[4..], MsgType::GetCollateralResp);
    }
    let _ = PlatformInfo::parse_body(wire);
    let _ = Collateral::parse_body(wire);
}

#[test]
fn parser_survives_truncation_mutation_and_garbage() {
    let good_info = proto::response(
        MsgType::GetPlatformInfoResp,
        0,
        &PlatformInfo::encode_body(4, 13, &[1; 16], &[2; 16]),
    );
    let coll = Collateral {
        major: 3,
        minor: 1,
        tcb_info: br#"{"tcbInfo":{"nextUpdate":"2030-01-01T00:00:00Z"}}"#.to_vec(),
        qe_identity: b"{}".to_vec(),
        root_ca_crl: vec![9; 40],
        ..Default::default()
    };
    let good_coll = proto::response(MsgType::GetCollateralResp, 0, &coll.encode_body());
    // The two good messages parse.
    let (_, b) = proto::parse_framed(&good_coll, MsgType::GetCollateralResp).unwrap();
    assert_eq!(Collateral::parse_body(b).unwrap(), coll);

    // Every truncation of both is an error, never a panic.
    for good in [&good_info, &good_coll] {
        for cut in 0..good.len() {
            assert!(proto::parse_framed(&good[..cut], MsgType::GetCollateralResp).is_err());
            parse_all(&good[..cut]);
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let base = if round % 2 == 0 {
            &good_info
        } else {
            &good_coll
        };
        let mut w = base.clone();
        match rng.below(5) {
            // Flip bytes.
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(w.len());
                    w[i] = rng.next() as u8;
                }
            }
            // Overwrite a u32 (a size field or the prefix) with an extreme value.
            1 => {
                let i = rng.below(w.len().saturating_sub(4));
                let v =
                    [0u32, 1, 15, 16, 0x7fff_ffff, 0xffff_ffff, rng.next() as u32][rng.below(7)];
                w[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            // Wrong version.
            2 => {
                w[4] = rng.next() as u8;
                w[5] = rng.next() as u8;
            }
            // Raw-mode reply: bare bytes with no framing.
            3 => {
                w = (0..rng.below(2048)).map(|_| rng.next() as u8).collect();
                if w.len() > 4 {
                    w[..4].copy_from_slice(&[4, 0, 2, 0]);
                }
            }
            // Trailing junk.
            _ => w.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
        parse_all(&w);
        // The prefix check alone bounds the allocation a reader makes.
        if w.len() >= 4
            && let Ok(n) = proto::parse_prefix([w[0], w[1], w[2], w[3]])
        {
            assert!(n <= proto::MAX_MESSAGE);
        }
    }
}
