//! vfio bind: cchost against the bare sysfs writes, on a real kernel.
//!
//! Boots the VM of tests/vm (edu + pci-testdev, intel-iommu) and, in one guest,
//! alternates two ways of moving both devices to vfio-pci:
//! - `cchost gpu bind --all` (process start, config, inventory, refusal checks with a
//!   /proc scan, journal writes, the sysfs sequence, device-node check), and
//! - a shell script doing only the sysfs writes of docs/facts/gpu.md#sysfs-bind-sequence for the two addresses it
//!   is given, then waiting for /dev/vfio/<group>.
//!
//! Each is put back (untimed) before the next round. Times come from the guest's
//! monotonic clock (`now at` in /proc/timer_list, ns); the cost of reading the clock is
//! measured too and subtracted, and `cchost --version` is timed to show how much of
//! cchost's time is only starting the process. Prints the medians and cchost's overhead. Run with
//! `cargo bench --bench vfio_bind` (env `VFIO_BENCH_ROUNDS`, default 21).
//!
//! `CCHOST_BENCH_STATIC_BIN=<path>` adds a second cchost binary (a static, non-PIE build,
//! docs/performance.md "vfio bind") to the same guest as `/bin/cchost-static`: it binds
//! in the same rounds, alternating with the others, so both builds meet the same load.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The harness's own unit tests are compiled out here, leaving their imports unused.
#[allow(unused_imports)]
#[path = "../tests/vm/harness.rs"]
mod harness;

use harness::{FIND_STAND_INS, STAND_IN_MATCH, Vm};

const BARE_BIND: &str = r#"for d in "$@"; do
  s=/sys/bus/pci/devices/$d
  echo > $s/driver_override
  if [ -e $s/driver ]; then echo $d > $s/driver/unbind; fi
  echo vfio-pci > $s/driver_override
  echo $d > /sys/bus/pci/drivers/vfio-pci/bind
  g=$(readlink $s/iommu_group); g=${g##*/}
  while [ ! -c /dev/vfio/$g ]; do :; done
done
"#;

/// Back to the original state: edu without a driver, pci-testdev on pci-stub.
const BARE_RESTORE: &str = r#"edu=$1; td=$2
for d in $edu $td; do
  s=/sys/bus/pci/devices/$d
  echo > $s/driver_override
  if [ -e $s/driver ]; then echo $d > $s/driver/unbind; fi
done
echo pci-stub > /sys/bus/pci/devices/$td/driver_override
echo $td > /sys/bus/pci/drivers/pci-stub/bind
"#;

fn script(rounds: usize, with_static: bool) -> String {
    let ways = if with_static { "c s b" } else { "c b" };
    let ways_rev = if with_static { "b s c" } else { "b c" };
    format!(
        r#"
{FIND_STAND_INS}
modprobe pci_stub || exit 1
sh /etc/bare-restore.sh $EDU $TD || exit 1
now() {{ set -- $(grep -m1 'now at' /proc/timer_list); echo $3; }}
drv() {{ d=$(readlink /sys/bus/pci/devices/$1/driver); echo ${{d##*/}}; }}
check() {{ [ "$(drv $EDU)" = "$1" ] && [ "$(drv $TD)" = "$2" ] || {{ echo "bad state: $(drv $EDU) $(drv $TD)"; exit 1; }}; }}
# Warm-up (cchost loads vfio-pci here; caches fill).
cchost gpu bind --all >/dev/null && cchost gpu unbind --all >/dev/null || exit 1
sh /etc/bare-bind.sh $EDU $TD && sh /etc/bare-restore.sh $EDU $TD || exit 1
check "" pci-stub
S=0
if [ -x /bin/cchost-static ]; then
  cchost-static gpu bind --all >/dev/null && cchost-static gpu unbind --all >/dev/null || exit 1
  check "" pci-stub
fi
i=0
while [ $i -lt {rounds} ]; do
  if [ $((i % 2)) = 0 ]; then order="{ways}"; else order="{ways_rev}"; fi
  for w in $order; do
    if [ $w = c ]; then
      t0=$(now); cchost gpu bind --all >/dev/null || exit 1; t1=$(now)
      check vfio-pci vfio-pci
      cchost gpu unbind --all >/dev/null || exit 1
      c=$((t1 - t0))
    elif [ $w = s ]; then
      t0=$(now); cchost-static gpu bind --all >/dev/null || exit 1; t1=$(now)
      check vfio-pci vfio-pci
      cchost-static gpu unbind --all >/dev/null || exit 1
      s=$((t1 - t0))
      t0=$(now); cchost-static --version >/dev/null; t1=$(now); S=$((t1 - t0))
      t0=$(now); cchost-static gpu bind --all --dry-run >/dev/null; t1=$(now); SD=$((t1 - t0))
    else
      t0=$(now); sh /etc/bare-bind.sh $EDU $TD || exit 1; t1=$(now)
      check vfio-pci vfio-pci
      sh /etc/bare-restore.sh $EDU $TD || exit 1
      b=$((t1 - t0))
    fi
    check "" pci-stub
  done
  t0=$(now); t1=$(now); e=$((t1 - t0))
  t0=$(now); cchost --version >/dev/null; t1=$(now); v=$((t1 - t0))
  t0=$(now); /bin/true; t1=$(now); tr=$((t1 - t0))
  t0=$(now); cchost gpu bind --all --dry-run >/dev/null; t1=$(now); dd=$((t1 - t0))
  echo "ROUND $c $b $e $v ${{s:-0}} $S $tr $dd ${{SD:-0}}"
  i=$((i + 1))
done
"#
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo test --benches` runs this too: only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("vfio_bind: run with `cargo bench --bench vfio_bind`");
        return;
    }
    let rounds: usize = std::env::var("VFIO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let static_bin = std::env::var_os("CCHOST_BENCH_STATIC_BIN").map(std::path::PathBuf::from);
    let mut vm = Vm::new();
    if let Some(p) = &static_bin {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        vm = vm.file_mode("/bin/cchost-static", data, 0o755);
    }
    let run = vm
        .config(STAND_IN_MATCH)
        .file("/etc/bare-bind.sh", BARE_BIND)
        .file("/etc/bare-restore.sh", BARE_RESTORE)
        .step_timeout(std::time::Duration::from_secs(590))
        .timeout(std::time::Duration::from_secs(600))
        .cmd(&script(rounds, static_bin.is_some()))
        .run();
    let step = run.step(0).assert_success();
    let (mut c, mut b, mut e, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s, mut sv, mut t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dd, mut sd) = (Vec::new(), Vec::new());
    for l in step.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let ["ROUND", cc, bb, ee, vv, ss, ssv, tt, ddd, sdd] = f[..] {
            let ms = |s: &str| s.parse::<f64>().expect("ns") / 1e6;
            c.push(ms(cc));
            b.push(ms(bb));
            e.push(ms(ee));
            v.push(ms(vv));
            s.push(ms(ss));
            sv.push(ms(ssv));
            t.push(ms(tt));
            dd.push(ms(ddd));
            sd.push(ms(sdd));
        }
    }
    assert_eq!(c.len(), rounds, "{step}");
    let clock = median(&mut e);
    let (mc, mb) = (median(&mut c) - clock, median(&mut b) - clock);
    let mut ratios: Vec<f64> = c
        .iter()
        .zip(&b)
        .map(|(c, b)| (c - clock) / (b - clock))
        .collect();
    let (cmin, cmax) = (
        c.iter().cloned().fold(f64::MAX, f64::min),
        c.iter().cloned().fold(0.0, f64::max),
    );
    let (bmin, bmax) = (
        b.iter().cloned().fold(f64::MAX, f64::min),
        b.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "vfio bind of 2 devices, {rounds} rounds, guest kernel {}",
        run.guest_kernel
    );
    println!("  clock read (subtracted): median {clock:.2} ms");
    println!(
        "  cchost gpu bind --all  : median {mc:.2} ms (min {:.2}, max {:.2})",
        cmin - clock,
        cmax - clock
    );
    println!(
        "  bare sysfs script      : median {mb:.2} ms (min {:.2}, max {:.2})",
        bmin - clock,
        bmax - clock
    );
    println!(
        "  cchost --version (process start alone): median {:.2} ms",
        median(&mut v) - clock
    );
    println!(
        "  /bin/true (process start of a tiny static binary): median {:.2} ms",
        median(&mut t) - clock
    );
    println!(
        "  cchost gpu bind --all --dry-run (start, config, inventory, refusal checks incl. /proc scan; no journal, no writes): median {:.2} ms",
        median(&mut dd) - clock
    );
    println!(
        "  overhead (median of medians): {:+.1} %",
        (mc / mb - 1.0) * 100.0
    );
    if static_bin.is_some() {
        let ms = median(&mut s) - clock;
        let (smin, smax) = (
            s.iter().cloned().fold(f64::MAX, f64::min),
            s.iter().cloned().fold(0.0, f64::max),
        );
        println!(
            "  static cchost gpu bind --all: median {ms:.2} ms (min {:.2}, max {:.2})",
            smin - clock,
            smax - clock
        );
        println!(
            "  static cchost --version: median {:.2} ms",
            median(&mut sv) - clock
        );
        println!(
            "  static cchost gpu bind --all --dry-run: median {:.2} ms",
            median(&mut sd) - clock
        );
        let mut sratios: Vec<f64> = s
            .iter()
            .zip(&b)
            .map(|(s, b)| (s - clock) / (b - clock))
            .collect();
        println!(
            "  static overhead: median of medians {:+.1} %, median of per-round ratios {:+.1} %",
            (ms / mb - 1.0) * 100.0,
            (median(&mut sratios) - 1.0) * 100.0
        );
    }
    println!(
        "  overhead (median of per-round ratios): {:+.1} %",
        (median(&mut ratios) - 1.0) * 100.0
    );
}
