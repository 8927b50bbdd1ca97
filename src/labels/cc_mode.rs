//! The GPUs' CC mode for the `nvidia.com/cc.mode.state` / `cc.ready.state` labels.
//!
//! The inventory does not touch firmware, so the labeler reads the mode itself, read-only,
//! through the same client `cchost gpu cc query` uses (a read-only mapping of
//! `resource0`, docs/facts/gpu.md#cc-read-only-query). It only asks a GPU that is driverless or on
//! vfio-pci and that nobody uses: a bound nvidia driver owns the device, and a running VM
//! owns its BAR0. A GPU that cannot be asked now keeps the mode last read in this
//! process — the mode only changes through a reset, which needs the GPU unused — so the
//! labels do not flap while a pod runs. A GPU never read leaves the node without the two
//! labels rather than guessing. A runtime-suspended GPU is woken for its first read only.
//!
//! A query that reaches the firmware and fails (boot never completes, BAR0 all-ones, the
//! invalid mode 2) is NVIDIA's `failed`; a mapping that cannot hold the registers is
//! not asked.

use std::collections::{HashMap, HashSet};

use crate::config::MatchConfig;
use crate::gpu::cc::precheck::SWITCHABLE_DRIVERS;
use crate::gpu::cc::{self, CcError, CcState, Family, Timing, live};
use crate::gpu::usage;
use crate::host::HostRoot;
use crate::host::mmio::MapAccess;
use crate::host::pci::{PciAddress, PciDevice, device_dir};
use crate::inventory::facts::{CcMode, NodeFacts};

/// Why a GPU's mode was not read this time (the last known value, if any, stands).
#[derive(Debug, thiserror::Error)]
pub enum NotAsked {
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Unreadable(String),
}

/// Reads one device's state once it may be asked: the live read-only mapping in
/// `cchost run` and `cchost plan`.
pub type Query<'a> = dyn Fn(&PciDevice, Family) -> Result<Result<CcState, CcError>, NotAsked> + 'a;

/// The live reader: read-only map, query. [`CcModeCache::fill`] has already checked the
/// driver and that nobody uses the device.
pub fn live_query(
    host: &HostRoot,
) -> impl Fn(&PciDevice, Family) -> Result<Result<CcState, CcError>, NotAsked> + '_ {
    move |pci, family| {
        let dev = live::open(host, pci, family, MapAccess::ReadOnly, Timing::default())
            .map_err(|e| NotAsked::Unreadable(e.to_string()))?;
        Ok(dev.device.query())
    }
}

/// The live reader for `cchost plan`, which only reads: a runtime-suspended GPU is
/// not woken (waking writes `power/control`); it is reported as not read.
pub fn live_query_no_wake(
    host: &HostRoot,
) -> impl Fn(&PciDevice, Family) -> Result<Result<CcState, CcError>, NotAsked> + '_ {
    move |pci, family| {
        if live::runtime_suspended(host, &pci.address)
            .map_err(|e| NotAsked::Unreadable(e.to_string()))?
        {
            return Err(NotAsked::Busy(
                "runtime-suspended, and reading it would mean waking it (a write); \
                 `cchost gpu cc query --wake` wakes it and puts the power setting back"
                    .to_string(),
            ));
        }
        live_query(host)(pci, family)
    }
}

/// The modes read so far, by PCI address.
#[derive(Debug, Default)]
pub struct CcModeCache {
    last: HashMap<String, CcMode>,
    /// A node mode the CC manager wants but could not apply everywhere yet (a device in
    /// use); shown as `<prefix>/cc.mode.pending`.
    pending: Option<String>,
}

/// The cache shared by the labeler and the label-driven CC manager, which records the
/// state each switch verified (a switched GPU is often runtime-suspended afterwards and
/// would not be read again).
pub type SharedCcModes = std::sync::Arc<std::sync::Mutex<CcModeCache>>;

impl CcModeCache {
    /// Records a state read by someone else (a switch's verified `after`).
    pub fn record(&mut self, address: &str, state: &CcState) {
        self.last.insert(address.to_string(), mode_of(state));
    }

    /// Sets or clears the mode waiting for busy devices.
    pub(crate) fn set_pending(&mut self, mode: Option<String>) {
        self.pending = mode;
    }

    /// Fills `cc_mode` of every CC-capable GPU in `facts`: read now when it may be read,
    /// else the last value read. This runs every labeler round, so the processes are
    /// scanned once for all GPUs, not once per GPU.
    /// Returns the GPUs whose mode is unknown after this round, with why.
    pub fn fill(
        &mut self,
        host: &HostRoot,
        matching: &MatchConfig,
        facts: &mut NodeFacts,
        query: &Query<'_>,
    ) -> Vec<(String, String)> {
        let mut unread: Vec<(String, String)> = Vec::new();
        let mut not_now = |address: &str, why: &NotAsked| {
            not_now(address, why);
            unread.push((address.to_string(), why.to_string()));
        };
        let mut askable: Vec<(PciDevice, Family)> = Vec::new();
        for gpu in facts.gpus.iter().filter(|g| g.cc_capable) {
            let known = self.last.contains_key(&gpu.address);
            match askable_device(host, matching, &gpu.address, known) {
                Ok(d) => askable.push(d),
                Err(why) => not_now(&gpu.address, &why),
            }
        }
        let pcis: Vec<PciDevice> = askable.iter().map(|(p, _)| p.clone()).collect();
        let busy: HashSet<PciAddress> = match usage::users_of_all(host, &pcis) {
            Ok(holders) => holders.into_iter().map(|(a, _)| a).collect(),
            // "Cannot tell" is not "unused": ask none of them.
            Err(e) => {
                let why = NotAsked::Busy(format!("cannot tell who uses the GPUs: {e}"));
                for p in &pcis {
                    not_now(&p.address.to_string(), &why);
                }
                pcis.iter().map(|p| p.address).collect()
            }
        };
        for (pci, family) in askable {
            let address = pci.address.to_string();
            if busy.contains(&pci.address) {
                not_now(&address, &NotAsked::Busy("in use".to_string()));
                continue;
            }
            match read_mode(&address, query(&pci, family)) {
                Ok(mode) => {
                    self.last.insert(address, mode);
                }
                Err(why) => not_now(&address, &why),
            }
        }
        for gpu in facts.gpus.iter_mut().filter(|g| g.cc_capable) {
            gpu.cc_mode = self.last.get(&gpu.address).copied();
        }
        facts.cc_pending = self.pending.clone();
        // Devices that left the host are forgotten.
        self.last
            .retain(|a, _| facts.gpus.iter().any(|g| &g.address == a));
        unread.retain(|(a, _)| !self.last.contains_key(a));
        unread
    }
}

fn not_now(address: &str, why: &NotAsked) {
    tracing::debug!(device = %address, reason = %why,
        "CC mode not read now; the last value read stands");
}

/// The device behind an address, when its driver lets it be asked (none, or vfio). An
/// idle GPU on vfio-pci is usually runtime-suspended, and reading it means waking it
/// (`power/control`): that is done once, for a GPU whose mode is not known yet, never
/// every round, so the labeler does not undo runtime power management.
fn askable_device(
    host: &HostRoot,
    matching: &MatchConfig,
    address: &str,
    known: bool,
) -> Result<(PciDevice, Family), NotAsked> {
    let addr: PciAddress = address
        .parse()
        .map_err(|e| NotAsked::Unreadable(format!("{address}: {e}")))?;
    let pci = host
        .pci_device(&addr)
        .map_err(|e| NotAsked::Unreadable(e.to_string()))?;
    let family = live::cc_family(matching, &pci)
        .ok_or_else(|| NotAsked::Unreadable(format!("{address}: no CC family for its chip")))?;
    if let Some(d) = &pci.driver
        && !SWITCHABLE_DRIVERS.contains(&d.as_str())
    {
        return Err(NotAsked::Busy(format!("bound to {d}")));
    }
    if known {
        let status = host
            .read_attr_opt(device_dir(&addr).join("power/runtime_status"))
            .map_err(|e| NotAsked::Unreadable(e.to_string()))?;
        if status.as_deref().is_some_and(|s| s != "active") {
            return Err(NotAsked::Busy(
                "runtime-suspended; not woken again".to_string(),
            ));
        }
    }
    Ok((pci, family))
}

fn read_mode(
    address: &str,
    read: Result<Result<CcState, CcError>, NotAsked>,
) -> Result<CcMode, NotAsked> {
    Ok(match read? {
        Ok(state) => mode_of(&state),
        // The mapping itself is wrong (a BAR smaller than the registers, as in a fixture
        // tree): that says nothing about the GPU.
        Err(CcError::Bar0(e)) => return Err(NotAsked::Unreadable(e.to_string())),
        Err(e) => {
            tracing::warn!(device = %address, error = %e, "CC mode query failed");
            CcMode::Failed
        }
    })
}

/// The label's view of a state: PPCIe wins, the invalid mode is a failure.
fn mode_of(state: &CcState) -> CcMode {
    if state.ppcie == Some(true) {
        return CcMode::Ppcie;
    }
    match state.mode {
        Some(cc::CcMode::On) => CcMode::On,
        Some(cc::CcMode::Devtools) => CcMode::Devtools,
        Some(cc::CcMode::Off) | None => CcMode::Off,
        Some(cc::CcMode::Invalid) => CcMode::Failed,
    }
}
