//! Inventory speed: the 8-GPU fixture host and a synthetic host with 1,000 PCI
//! functions. Prints the median and p90 of many runs; figures go in
//! docs/performance.md ("Inventory"). Run: `cargo bench --bench inventory`.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cchost::config::Config;
use cchost::fixture::scenarios;
use cchost::inventory::Inventory;

fn measure(label: &str, iterations: usize, mut f: impl FnMut()) {
    f(); // warm the page cache
    let mut times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[times.len() * 9 / 10];
    println!("{label}: median {median:.2?}, p90 {p90:.2?} over {iterations} runs");
}

fn main() {
    let config = Config::default();
    let tmp = tempfile::tempdir().expect("temp dir");

    let hgx = scenarios::scenario("tdx-8xh100-4nvswitch", &tmp.path().join("hgx"))
        .and_then(|h| h.build())
        .expect("8-GPU fixture");
    let inv = Inventory::collect(&hgx, &config);
    assert_eq!(inv.gpus.devices.len(), 12);
    measure(
        "inventory, 8xH100 + 4 NVSwitch fixture (39 PCI functions)",
        200,
        || {
            std::hint::black_box(Inventory::collect(&hgx, &config));
        },
    );

    let big = scenarios::synthetic(&tmp.path().join("big"), 1000)
        .build()
        .expect("synthetic host");
    assert_eq!(big.pci_addresses().map(|a| a.len()).unwrap_or(0), 1000);
    measure(
        "inventory, synthetic host with 1,000 PCI functions",
        50,
        || {
            std::hint::black_box(Inventory::collect(&big, &config));
        },
    );
}
