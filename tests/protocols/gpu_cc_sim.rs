//! The CC client end to end against the register-level FSP simulator: the same
//! `CcDevice` code that drives `resource0` on real hardware. These prove the client
//! follows the documented protocol and handles each failure; they cannot prove real
//! firmware timing or undocumented knob semantics (docs/gpu.md, "CC mode").
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cchost::gpu::cc::device::Timing;
use cchost::gpu::cc::fsp::Knob;
use cchost::gpu::cc::sim::{Fault, SimConfig, SimGpu};
use cchost::gpu::cc::switch::{self, Status};
use cchost::gpu::cc::{CcDevice, CcError, CcMode, Family, TargetMode};

fn fast() -> Timing {
    Timing {
        rpc: Duration::from_millis(150),
        boot: Some(Duration::from_millis(500)),
        poll: Duration::from_millis(1),
        firewall: Duration::from_millis(500),
        firewall_fallback: Duration::from_millis(50),
    }
}

fn sim(family: Family) -> SimGpu {
    SimGpu::new(SimConfig::new(family).reset_delay(Duration::from_millis(30)))
}

fn dev(s: &SimGpu, name: &str) -> CcDevice {
    s.device(name, fast())
}

#[test]
fn query_reads_off_on_every_family() {
    for f in [
        Family::Hopper,
        Family::Blackwell,
        Family::Gb20x,
        Family::Ls10,
    ] {
        let s = sim(f);
        let st = dev(&s, "d").query().unwrap();
        if f == Family::Ls10 {
            assert_eq!((st.mode, st.ppcie), (None, Some(false)), "{f:?}");
        } else {
            assert_eq!(st.mode, Some(CcMode::Off), "{f:?}");
        }
        // A query is register reads only: no RPC reached the firmware.
        assert_eq!(s.rpcs(), 0, "{f:?}");
    }
}

#[test]
fn staged_knobs_are_pending_until_reset() {
    for f in [Family::Hopper, Family::Blackwell] {
        let s = sim(f);
        let d = dev(&s, "gpu0");
        let changes = d.stage_cc(TargetMode::On).unwrap();
        assert!(changes.iter().any(|c| c.knob == Knob::CCM && c.new == 1));
        assert_eq!(s.pending_knob(8), Some(1), "{f:?} CCM pending");
        assert_eq!(
            d.pending_knobs(&[Knob::CCM, Knob::CCD]).unwrap(),
            vec![(Knob::CCM, 1), (Knob::CCD, 0)]
        );
        // Still off: knobs act only at reset.
        assert_eq!(d.query().unwrap().mode, Some(CcMode::Off), "{f:?}");
        d.reset().unwrap();
        assert_eq!(d.query().unwrap().mode, Some(CcMode::On), "{f:?}");
    }
}

#[test]
fn hopper_on_writes_the_documented_knobs() {
    let s = sim(Family::Hopper);
    s.preset_active(&[(2, 1), (4, 1), (34, 1), (45, 1)]);
    let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
    assert_eq!(out.status, Status::Switched, "{out:?}");
    for (k, v) in [(2, 0), (4, 0), (34, 0), (45, 0), (10, 2), (8, 1), (6, 0)] {
        assert_eq!(s.pending_knob(k), Some(v), "knob {k}");
    }
    let after = out.after.unwrap();
    assert_eq!((after.mode, after.ppcie), (Some(CcMode::On), Some(false)));
    assert_eq!(s.resets(), 1);
}

#[test]
fn every_mode_round_trip_and_unchanged_is_free() {
    for f in [Family::Hopper, Family::Blackwell, Family::Gb20x] {
        let s = sim(f);
        let d = dev(&s, "gpu0");
        for m in [
            TargetMode::On,
            TargetMode::Devtools,
            TargetMode::Off,
            TargetMode::On,
        ] {
            let out = switch::set_cc_one(&d, m);
            assert_eq!(out.status, Status::Switched, "{f:?} {m}: {out:?}");
            assert_eq!(out.after.unwrap().mode, Some(m.as_mode()));
            assert_eq!(s.active_register() & 3, m.mode_bits(), "{f:?} {m}");
        }
        let (writes, resets) = (s.knob_writes(), s.resets());
        let out = switch::set_cc_one(&d, TargetMode::On);
        assert_eq!(out.status, Status::Unchanged, "{out:?}");
        assert!(out.knobs_changed.is_empty());
        assert_eq!(
            s.knob_writes(),
            writes,
            "check-and-write wrote an unchanged knob"
        );
        assert_eq!(s.resets(), resets, "no reset when nothing changes");
    }
}

trait Bits {
    fn mode_bits(self) -> u32;
}
impl Bits for TargetMode {
    fn mode_bits(self) -> u32 {
        match self {
            TargetMode::Off => 0,
            TargetMode::On => 1,
            TargetMode::Devtools => 3,
        }
    }
}

#[test]
fn knob_order_sets_ccm_first_and_clears_it_last() {
    let s = sim(Family::Hopper);
    let d = dev(&s, "gpu0");
    d.stage_cc(TargetMode::Devtools).unwrap();
    // CCM before CCD: a CCD-only pending state never exists.
    assert_eq!(s.take_write_log(), vec![(8, 1), (6, 1)]);
    d.stage_cc(TargetMode::Off).unwrap();
    assert_eq!(s.take_write_log(), vec![(6, 0), (8, 0)]);
    s.preset_active(&[(2, 1), (34, 1)]);
    d.stage_cc(TargetMode::On).unwrap();
    // Hopper: 2/4/34 cleared (only those set), decoupler 2, then CCM; CCD already 0.
    assert_eq!(s.take_write_log(), vec![(2, 0), (34, 0), (10, 2), (8, 1)]);

    let b = sim(Family::Blackwell);
    b.preset_active(&[(2, 1)]);
    b.device("b0", fast()).stage_cc(TargetMode::On).unwrap();
    // Blackwell: no decoupler and no 2/4/34 clearing.
    assert_eq!(b.take_write_log(), vec![(8, 1)]);
}

#[test]
fn old_firmware_without_the_ppcie_knob_still_switches() {
    let mut cfg = SimConfig::new(Family::Hopper).reset_delay(Duration::from_millis(20));
    cfg.knows_ppcie_knob = false;
    let s = SimGpu::new(cfg);
    let out = switch::set_cc_one(&s.device("gpu0", fast()), TargetMode::On);
    assert_eq!(out.status, Status::Switched, "{out:?}");
}

#[test]
fn rpc_timeout_fails_with_state_read_back_and_no_reset() {
    for f in [Family::Hopper, Family::Blackwell] {
        let s = sim(f);
        s.inject(Fault::NoReply);
        let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
        assert_eq!(out.status, Status::Failed);
        let err = out.error.clone().unwrap();
        assert!(err.contains("timed out"), "{f:?}: {err}");
        assert_eq!(out.after.unwrap().mode, Some(CcMode::Off));
        assert!(out.read_back.is_some());
        assert_eq!(s.resets(), 0);
    }
}

#[test]
fn error_status_is_reported_and_nothing_stays_staged() {
    let s = sim(Family::Hopper);
    s.inject(Fault::ErrorStatus(0x1f));
    let d = dev(&s, "gpu0");
    let err = d.stage_cc(TargetMode::On).unwrap_err();
    assert!(
        matches!(err, CcError::FspStatus { status: 0x1f, .. }),
        "{err}"
    );
    let out = switch::set_cc_one(&d, TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    assert!(out.error.unwrap().contains("status 0x1f"));
    assert_eq!(s.resets(), 0);
}

#[test]
fn inband_refusal_midway_rolls_back_staged_knobs() {
    let s = sim(Family::Hopper);
    s.preset_active(&[(2, 1)]);
    s.set_knob(7, 0); // CCM_ALLOW_INB = 0: the CCM write is refused after 2/4/34/decoupler
    let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
    assert_eq!(out.status, Status::Failed, "{out:?}");
    assert_eq!(s.pending_knob(2), Some(1), "knob 2 restored");
    assert_eq!(s.pending_knob(10), Some(0), "decoupler restored");
    assert_eq!(s.pending_knob(8), Some(0));
    assert_eq!(s.resets(), 0);
}

#[test]
fn invalid_mode_after_interrupted_switch_is_failed_then_fixed_by_setting() {
    let s = sim(Family::Hopper);
    s.inject(Fault::InvalidModeAfterReset);
    let d = dev(&s, "gpu0");
    let out = switch::set_cc_one(&d, TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    assert!(out.error.unwrap().contains("cc=invalid"));
    assert_eq!(out.after.unwrap().mode, Some(CcMode::Invalid));
    assert_eq!(out.after.unwrap().label(), "failed");
    // The fault was one-shot; setting a mode again repairs the device.
    let out = switch::set_cc_one(&d, TargetMode::On);
    assert_eq!(out.status, Status::Switched, "{out:?}");
}

#[test]
fn all_ones_bar_is_a_clear_error() {
    let s = sim(Family::Hopper);
    s.inject(Fault::AllOnes);
    let d = dev(&s, "gpu0");
    let err = d.query().unwrap_err();
    assert!(matches!(err, CcError::AllOnes { offset: 0 }), "{err}");
    assert!(err.to_string().contains("runtime-suspended"));
    let out = switch::set_cc_one(&d, TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    let rb = out.read_back.unwrap();
    assert_eq!(rb.boot_0, Some(u32::MAX));
    assert!(rb.state.is_none());
    assert_eq!(s.rpcs(), 0);
}

#[test]
fn boot_that_never_completes_times_out_after_reset() {
    let s = sim(Family::Hopper);
    s.inject(Fault::BootNeverCompletes);
    let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    assert!(out.error.unwrap().contains("boot-complete"));
    assert_eq!(out.read_back.unwrap().boot_complete, Some(0));
    assert_eq!(s.resets(), 1);
}

#[test]
fn failed_reset_restores_the_staged_knobs() {
    let s = sim(Family::Blackwell);
    s.inject(Fault::ResetFails);
    let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::Devtools);
    assert_eq!(out.status, Status::Failed);
    assert!(out.error.unwrap().contains("reset failed"));
    assert_eq!((s.pending_knob(8), s.pending_knob(6)), (Some(0), Some(0)));
}

#[test]
fn blackwell_boot_firewall_window_is_waited_out() {
    let s = SimGpu::new(SimConfig::new(Family::Blackwell).reset_delay(Duration::from_millis(80)));
    let d = s.device("gpu0", fast());
    d.stage_cc(TargetMode::On).unwrap();
    d.reset().unwrap();
    // BAR0 reads all-ones right after the reset...
    assert_eq!(d.bar0().read32(0).unwrap(), u32::MAX);
    // ...and the query waits until the firewall drops and the FSP has booted.
    assert_eq!(d.query().unwrap().mode, Some(CcMode::On));
}

#[test]
fn blackwell_waits_for_the_dvsec_firewall_bit_before_trusting_bar0() {
    for family in [Family::Blackwell, Family::Gb20x] {
        let s = SimGpu::new(
            SimConfig::new(family)
                .reset_delay(Duration::from_millis(80))
                .firewall(Duration::from_millis(60)),
        );
        let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
        assert_eq!(out.status, Status::Switched, "{family:?} {:?}", out.error);
        // The client watched config space, not BAR0, while the firewall was up.
        assert_eq!(s.firewalled_reads(), 0, "{family:?}");
    }
}

#[test]
fn blackwell_without_the_dvsec_sleeps_the_fallback_and_ignores_other_vendors_dvsec() {
    // The config space holds only a foreign vendor's DVSEC with bit 20 set: it must not
    // be taken for NVIDIA's (that would wait out the whole firewall timeout and fail).
    let s = SimGpu::new(
        SimConfig::new(Family::Blackwell)
            .reset_delay(Duration::from_millis(40))
            .firewall(Duration::from_millis(30))
            .without_dvsec(),
    );
    // fast(): fallback 50 ms, longer than the 30 ms window.
    let out = switch::set_cc_one(&dev(&s, "gpu0"), TargetMode::On);
    assert_eq!(out.status, Status::Switched, "{:?}", out.error);
    assert_eq!(s.firewalled_reads(), 0);
}

#[test]
fn a_firewall_that_never_drops_fails_the_switch_with_its_own_error() {
    let s = SimGpu::new(
        SimConfig::new(Family::Blackwell)
            .reset_delay(Duration::from_millis(20))
            .firewall(Duration::from_secs(3600)),
    );
    let t = Timing {
        firewall: Duration::from_millis(100),
        ..fast()
    };
    let out = switch::set_cc_one(&s.device("gpu0", t), TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    let e = out.error.unwrap();
    assert!(e.contains("BAR0 firewall") && e.contains("still up"), "{e}");
    // The read-back shows what BAR0 says now: all-ones behind the firewall.
    assert_eq!(out.read_back.unwrap().boot_0, Some(u32::MAX));
}

#[test]
fn nvswitch_has_no_cc_mode() {
    let s = sim(Family::Ls10);
    let out = switch::set_cc_one(&dev(&s, "sw0"), TargetMode::On);
    assert_eq!(out.status, Status::Failed);
    assert!(out.error.unwrap().contains("NVSwitch"));
    assert_eq!(s.knob_writes(), 0);
}

#[test]
fn stale_reply_in_the_message_queue_is_not_taken_for_the_answer() {
    let s = sim(Family::Hopper);
    let d = dev(&s, "gpu0");
    // Leave a reply nobody acknowledged (an interrupted earlier run), then make the FSP
    // silent: the client must discard the stale message and time out, not parse it.
    d.bar0().write32(0x8f2c80 + 2 * 8 + 4, 2048 + 8).unwrap();
    s.inject(Fault::NoReply);
    let err = d.pending_knobs(&[Knob::CCM]).unwrap_err();
    assert!(matches!(err, CcError::RpcTimeout { .. }), "{err}");
    s.clear_faults();
    assert_eq!(d.pending_knobs(&[Knob::CCM]).unwrap(), vec![(Knob::CCM, 0)]);
}

#[test]
fn parallel_results_stay_separate() {
    let sims: Vec<SimGpu> = (0..4).map(|_| sim(Family::Hopper)).collect();
    sims[2].inject(Fault::NoReply);
    let devs: Vec<CcDevice> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| dev(s, &format!("gpu{i}")))
        .collect();
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let outs = switch::set_cc_all(&refs, TargetMode::On);
    let names: Vec<&str> = outs.iter().map(|o| o.device.as_str()).collect();
    assert_eq!(names, ["gpu0", "gpu1", "gpu2", "gpu3"]);
    for (i, o) in outs.iter().enumerate() {
        if i == 2 {
            assert_eq!(o.status, Status::Failed);
            assert!(o.error.as_deref().unwrap().contains("timed out"));
            assert_eq!(sims[i].resets(), 0);
        } else {
            assert_eq!(o.status, Status::Switched, "{o:?}");
            assert_eq!(sims[i].active_register() & 3, 1);
        }
    }
}

fn hgx() -> (Vec<SimGpu>, Vec<CcDevice>) {
    let mut sims: Vec<SimGpu> = (0..8).map(|_| sim(Family::Hopper)).collect();
    sims.extend((0..4).map(|_| sim(Family::Ls10)));
    let devs = sims
        .iter()
        .enumerate()
        .map(|(i, s)| dev(s, &format!("dev{i}")))
        .collect();
    (sims, devs)
}

#[test]
fn ppcie_on_and_off_for_a_whole_board() {
    let (sims, devs) = hgx();
    sims[0].preset_active(&[(8, 1)]); // one GPU in CC on: PPCIe clears it
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Switched, "{r:?}");
    for (o, s) in r.devices.iter().zip(&sims) {
        assert_eq!(o.status, Status::Switched, "{o:?}");
        assert_eq!(o.after.unwrap().ppcie, Some(true));
        if s.family() == Family::Hopper {
            assert_eq!(o.after.unwrap().mode, Some(CcMode::Off));
            assert_eq!(s.pending_knob(10), Some(2));
        }
    }
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Unchanged, "{r:?}");
    let r = switch::set_ppcie_all(&refs, false);
    assert_eq!(r.status, Status::Switched, "{r:?}");
    assert!(
        r.devices
            .iter()
            .all(|o| o.after.unwrap().ppcie == Some(false))
    );
}

#[test]
fn ppcie_staging_failure_anywhere_changes_nothing() {
    let (sims, devs) = hgx();
    sims[10].inject(Fault::ErrorStatus(0x7));
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Failed);
    for (i, (o, s)) in r.devices.iter().zip(&sims).enumerate() {
        assert_eq!(s.resets(), 0, "dev{i} was reset");
        if i == 10 {
            assert_eq!(o.status, Status::Failed);
        } else {
            assert_eq!(o.status, Status::Skipped, "{o:?}");
            assert_eq!(s.pending_knob(45), Some(0), "dev{i} PPCIE left staged");
            assert_eq!(s.pending_knob(8), Some(0));
        }
    }
}

#[test]
fn ppcie_refuses_groups_with_unsupported_or_unreadable_devices() {
    let (sims, mut devs) = hgx();
    let bw = sim(Family::Blackwell);
    devs.push(dev(&bw, "b200"));
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Failed);
    assert!(r.devices.iter().all(|o| o.status == Status::Skipped));
    assert!(sims.iter().all(|s| s.rpcs() == 0));

    let (sims, devs) = hgx();
    sims[3].inject(Fault::AllOnes);
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.devices[3].status, Status::Failed);
    assert!(sims.iter().all(|s| s.knob_writes() == 0 && s.resets() == 0));
}

#[test]
fn ppcie_verification_failure_is_reported_per_device() {
    let (sims, devs) = hgx();
    sims[5].inject(Fault::BootNeverCompletes);
    let refs: Vec<&CcDevice> = devs.iter().collect();
    let r = switch::set_ppcie_all(&refs, true);
    assert_eq!(r.status, Status::Failed);
    for (i, o) in r.devices.iter().enumerate() {
        let want = if i == 5 {
            Status::Failed
        } else {
            Status::Switched
        };
        assert_eq!(o.status, want, "dev{i}: {o:?}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["devices"][5]["status"], "failed");
    assert_eq!(json["devices"][5]["read_back"]["boot_complete"], 0);
}
