//! CC mode switch time, 1 GPU vs 8 GPUs, against the FSP simulator with a 1.8 s
//! reset-to-boot delay (≈ what H100s show, docs/facts/gpu.md#cc-registers). The time is dominated by
//! that delay, so this measures whether the resets overlap, not register speed.
//!
//! `cargo bench --bench cc_switch` — about 30 s. Prints medians; asserts nothing.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cchost::gpu::cc::device::Timing;
use cchost::gpu::cc::sim::{SimConfig, SimGpu};
use cchost::gpu::cc::switch::{self, Status};
use cchost::gpu::cc::{CcDevice, Family, TargetMode};

const RESET_DELAY: Duration = Duration::from_millis(1800);
const RUNS: usize = 3;

fn board(gpus: usize, switches: usize) -> (Vec<SimGpu>, Vec<CcDevice>) {
    let mut sims: Vec<SimGpu> = (0..gpus)
        .map(|_| SimGpu::new(SimConfig::new(Family::Hopper).reset_delay(RESET_DELAY)))
        .collect();
    sims.extend(
        (0..switches).map(|_| SimGpu::new(SimConfig::new(Family::Ls10).reset_delay(RESET_DELAY))),
    );
    let devs = sims
        .iter()
        .enumerate()
        .map(|(i, s)| s.device(format!("dev{i}"), Timing::default()))
        .collect();
    (sims, devs)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_cc(n: usize) -> Duration {
    let runs = (0..RUNS)
        .map(|_| {
            let (_sims, devs) = board(n, 0);
            let refs: Vec<&CcDevice> = devs.iter().collect();
            let t = Instant::now();
            let outs = switch::set_cc_all(&refs, TargetMode::On);
            let d = t.elapsed();
            assert!(outs.iter().all(|o| o.status == Status::Switched));
            d
        })
        .collect();
    median(runs)
}

fn main() {
    let one = time_cc(1);
    let eight = time_cc(8);
    println!(
        "cc_switch: reset delay {} ms, median of {RUNS} runs",
        RESET_DELAY.as_millis()
    );
    println!("  set on,  1 GPU  (parallel): {:>6} ms", one.as_millis());
    println!("  set on,  8 GPUs (parallel): {:>6} ms", eight.as_millis());
    println!(
        "  ratio 8/1: {:.3} (target <= 1.2)",
        eight.as_secs_f64() / one.as_secs_f64()
    );

    // The one-by-one order NVIDIA's manager uses for PPCIe-off resets, for contrast (1 run).
    let (_sims, devs) = board(8, 0);
    let t = Instant::now();
    for d in &devs {
        let o = switch::set_cc_one(d, TargetMode::On);
        assert_eq!(o.status, Status::Switched);
    }
    println!(
        "  set on,  8 GPUs (one by one, 1 run): {:>6} ms",
        t.elapsed().as_millis()
    );

    let runs = (0..RUNS)
        .map(|_| {
            let (_sims, devs) = board(8, 4);
            let refs: Vec<&CcDevice> = devs.iter().collect();
            let t = Instant::now();
            let r = switch::set_ppcie_all(&refs, true);
            let d = t.elapsed();
            assert_eq!(r.status, Status::Switched);
            d
        })
        .collect();
    println!(
        "  ppcie on, 8 GPUs + 4 NVSwitches:     {:>6} ms",
        median(runs).as_millis()
    );
}
