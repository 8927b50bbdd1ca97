//! Moving one PCI function between drivers through sysfs, journaled.
//!
//! The bind sequence is NVIDIA vfio-manage's (docs/facts/gpu.md#sysfs-bind-sequence): clear
//! `driver_override`, unbind from the current driver, write the vfio driver's name to
//! `driver_override`, write the address to `/sys/bus/pci/drivers/<driver>/bind`. No
//! `new_id`, no `drivers_probe`, no remove/rescan. A device already on the target
//! driver is left alone. Every change is journaled before it starts, with the
//! binding (driver + override) that restores it.
//!
//! What to bind, and whether it is safe, is decided before (see `plan::vfio`); this module
//! only acts.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::usage;
use crate::host::pci::{PCI_DRIVERS, PciAddress, PciDevice, device_dir};
use crate::host::{HostError, HostRoot, NodeKind};
use crate::journal::{Entry, Journal, JournalError, RestoreError, Restorer};

/// Journal kind of a bind to vfio (restore: the former binding).
pub const BIND_KIND: &str = "vfio.bind";
/// Journal kind of an unbind of a device cchost did not bind (restore: back to vfio).
pub(crate) const UNBIND_KIND: &str = "vfio.unbind";

/// Which driver a device is on, and what its `driver_override` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub driver: Option<String>,
    pub driver_override: Option<String>,
}

impl Binding {
    pub(crate) fn of(dev: &PciDevice) -> Self {
        Binding {
            driver: dev.driver.clone(),
            driver_override: dev.driver_override.clone(),
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.driver, &self.driver_override) {
            (Some(d), None) => write!(f, "driver {d}"),
            (Some(d), Some(o)) => write!(f, "driver {d} (override {o})"),
            (None, None) => write!(f, "no driver"),
            (None, Some(o)) => write!(f, "no driver (override {o})"),
        }
    }
}

/// One sysfs step, reported to the observer after it is done (crash tests kill cchost
/// after a chosen step; progress output uses it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The journal entry is on disk.
    Journaled,
    /// `driver_override` cleared.
    OverrideCleared,
    /// Unbound from the former driver.
    Unbound,
    /// `driver_override` set to the target driver.
    OverrideSet,
    /// Written to the target driver's `bind`.
    Bound,
    /// The vfio device node is there.
    NodeReady,
    /// The journal entry is marked done.
    Committed,
}

/// Called after each step. `Send`: parallel binds share it (behind a lock).
pub(crate) type Observer<'a> = &'a mut (dyn FnMut(&PciAddress, Step) + Send);

/// The journal and the observer, shared by threads binding devices in parallel. The
/// journal is locked only around its own writes; the sysfs writes of different devices
/// run concurrently (the kernel serializes binds of one device, not of different ones).
pub(crate) struct Shared<'j, 'o> {
    journal: Mutex<&'j mut Journal>,
    observe: Mutex<Observer<'o>>,
}

impl<'j, 'o> Shared<'j, 'o> {
    pub fn new(journal: &'j mut Journal, observe: Observer<'o>) -> Self {
        Shared {
            journal: Mutex::new(journal),
            observe: Mutex::new(observe),
        }
    }

    /// The journal, exclusively (a poisoned lock still holds a consistent journal: every
    /// change to it is written through before the lock is released).
    pub fn journal(&self) -> MutexGuard<'_, &'j mut Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, a: &PciAddress, step: Step) {
        let mut o = self.observe.lock().unwrap_or_else(|p| p.into_inner());
        (*o)(a, step);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{address}: wrote {driver}/bind but the device is on {found}")]
    NotBound {
        address: PciAddress,
        driver: String,
        found: String,
    },
    #[error("{address}: wrote {driver}/unbind but the device is still on {found}")]
    StillBound {
        address: PciAddress,
        driver: String,
        found: String,
    },
    #[error(
        "{address}: bound to {driver}, but no vfio device node ({}) appeared within {waited_ms} ms; is /dev a devtmpfs?",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NoDeviceNode {
        address: PciAddress,
        driver: String,
        paths: Vec<PathBuf>,
        waited_ms: u64,
    },
    #[error("driver {driver} is not loaded (no {}){hint}", path.display())]
    DriverMissing {
        driver: String,
        path: PathBuf,
        hint: String,
    },
    #[error("{address} is in use, not changing it: {}", holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("; "))]
    InUse {
        address: PciAddress,
        holders: Vec<usage::Holder>,
    },
}

impl From<VfioError> for RestoreError {
    fn from(e: VfioError) -> Self {
        RestoreError::new(e.to_string())
    }
}

/// What a bind did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum BindOutcome {
    /// Already on the target driver; nothing changed.
    AlreadyBound { driver: String },
    /// Moved from `from` to `driver`.
    Bound { from: Binding, driver: String },
}

/// Binds one function to `driver` (a directory name under /sys/bus/pci/drivers, which
/// must exist). The caller has checked that the device may be moved.
pub fn bind(
    host: &HostRoot,
    journal: &mut Journal,
    address: &PciAddress,
    driver: &str,
    node_timeout: Duration,
    observe: Observer<'_>,
) -> Result<BindOutcome, VfioError> {
    bind_shared(
        &Shared::new(journal, observe),
        host,
        address,
        driver,
        node_timeout,
    )
}

/// A bind whose journal entry is on disk and whose sysfs writes are still to come.
#[derive(Debug)]
pub(crate) struct Begun {
    seq: u64,
    dev: PciDevice,
    current: Binding,
    driver: String,
}

/// The journal half of a bind: reads the device and writes its entry (`applying`).
/// `None` when the device is already on `driver`. Parallel binds begin every device
/// first, in plan order, so the journal's order (and undo's) does not depend on how
/// the threads are scheduled.
pub(crate) fn begin_bind(
    shared: &Shared<'_, '_>,
    host: &HostRoot,
    address: &PciAddress,
    driver: &str,
) -> Result<Option<Begun>, VfioError> {
    let dev = host.pci_device(address)?;
    if dev.driver.as_deref() == Some(driver) {
        return Ok(None);
    }
    let subject = address.to_string();
    let current = Binding::of(&dev);
    // A device cchost moved before (and someone moved since) keeps its first original.
    let seq = {
        let mut journal = shared.journal();
        match journal.find(BIND_KIND, &subject).map(|e| e.seq) {
            Some(seq) => {
                journal.reapplying(seq)?;
                seq
            }
            None => journal.begin(
                BIND_KIND,
                &subject,
                Binding {
                    driver: Some(driver.to_string()),
                    driver_override: Some(driver.to_string()),
                },
                &current,
            )?,
        }
    };
    shared.observe(address, Step::Journaled);
    Ok(Some(Begun {
        seq,
        dev,
        current,
        driver: driver.to_string(),
    }))
}

/// The sysfs half of a bind begun with [`begin_bind`]: the writes, the device-node
/// wait, the commit.
pub(crate) fn finish_bind(
    shared: &Shared<'_, '_>,
    host: &HostRoot,
    b: Begun,
    node_timeout: Duration,
) -> Result<BindOutcome, VfioError> {
    let address = b.dev.address;
    let mut observe = |a: &PciAddress, s: Step| shared.observe(a, s);
    move_to(host, &b.dev, &b.driver, &mut observe)?;
    wait_for_node(host, &address, &b.driver, node_timeout)?;
    shared.observe(&address, Step::NodeReady);
    shared.journal().applied(b.seq)?;
    shared.observe(&address, Step::Committed);
    Ok(BindOutcome::Bound {
        from: b.current,
        driver: b.driver,
    })
}

/// [`bind`] with a journal shared with other threads.
pub(crate) fn bind_shared(
    shared: &Shared<'_, '_>,
    host: &HostRoot,
    address: &PciAddress,
    driver: &str,
    node_timeout: Duration,
) -> Result<BindOutcome, VfioError> {
    match begin_bind(shared, host, address, driver)? {
        None => Ok(BindOutcome::AlreadyBound {
            driver: driver.to_string(),
        }),
        Some(b) => finish_bind(shared, host, b, node_timeout),
    }
}

/// The four writes of docs/facts/gpu.md#sysfs-bind-sequence (bind) from the state `dev` shows.
fn move_to(
    host: &HostRoot,
    dev: &PciDevice,
    driver: &str,
    observe: Observer<'_>,
) -> Result<(), VfioError> {
    let dir = device_dir(&dev.address);
    let bdf = dev.address.to_string();
    // A single newline clears the override (the kernel treats an empty value as "none").
    host.write_attr(dir.join("driver_override"), "\n")?;
    observe(&dev.address, Step::OverrideCleared);
    if host.exists(dir.join("driver")) {
        host.write_attr(dir.join("driver/unbind"), &bdf)?;
    }
    observe(&dev.address, Step::Unbound);
    host.write_attr(dir.join("driver_override"), driver)?;
    observe(&dev.address, Step::OverrideSet);
    host.write_attr(PathBuf::from(PCI_DRIVERS).join(driver).join("bind"), &bdf)?;
    let now = host.pci_device(&dev.address)?;
    if now.driver.as_deref() != Some(driver) {
        return Err(VfioError::NotBound {
            address: dev.address,
            driver: driver.to_string(),
            found: Binding::of(&now).to_string(),
        });
    }
    observe(&dev.address, Step::Bound);
    Ok(())
}

/// The vfio device nodes a bound device should get: the group node and, under iommufd,
/// the cdev. Either one is enough (kernels may build only one of the two interfaces).
fn wait_for_node(
    host: &HostRoot,
    address: &PciAddress,
    driver: &str,
    timeout: Duration,
) -> Result<(), VfioError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let dev = host.pci_device(address)?;
        let mut paths = Vec::new();
        if let Some(g) = dev.iommu_group {
            paths.push(PathBuf::from(format!("/dev/vfio/{g}")));
        }
        if let Some(v) = &dev.vfio_dev {
            paths.push(PathBuf::from(format!("/dev/vfio/devices/{v}")));
        }
        if paths
            .iter()
            .any(|p| host.kind_followed(p) == Some(NodeKind::CharDevice))
        {
            return Ok(());
        }
        // devtmpfs creates the node from a kernel thread; it usually takes well under
        // a millisecond, but give a loaded host some time.
        if start.elapsed() >= timeout {
            return Err(VfioError::NoDeviceNode {
                address: *address,
                driver: driver.to_string(),
                paths,
                waited_ms: timeout.as_millis() as u64,
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// What an unbind did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum UnbindOutcome {
    /// Not on a vfio driver and not journaled: nothing to do.
    NotBound { binding: Binding },
    /// Put back to the binding the journal recorded before cchost's bind.
    Restored { to: Binding },
    /// Bound to vfio by someone else: released, left driverless (docs/facts/gpu.md#sysfs-bind-sequence).
    Released { from: Binding },
}

/// Releases a device from vfio: back to what the journal recorded, or, for a device
/// cchost did not bind, driverless with `driver_override` cleared.
pub fn unbind(
    host: &HostRoot,
    journal: &mut Journal,
    address: &PciAddress,
    is_vfio_driver: &dyn Fn(&str) -> bool,
    observe: Observer<'_>,
) -> Result<UnbindOutcome, VfioError> {
    let subject = address.to_string();
    if let Some(entry) = journal.find(BIND_KIND, &subject).cloned() {
        let original: Binding = entry.restore_as().map_err(|e| JournalError::Restore {
            entry: entry.to_string(),
            source: e,
        })?;
        journal.restoring(entry.seq)?;
        observe(address, Step::Journaled);
        if let Err(e) = restore_binding(host, address, &original) {
            // Refused before any write (in use, driver missing): the bind stands as it
            // was, and so does its entry. Otherwise the entry stays `restoring` for the
            // next run to finish.
            if matches!(e, VfioError::InUse { .. } | VfioError::DriverMissing { .. }) {
                journal.applied(entry.seq)?;
            }
            return Err(e);
        }
        journal.forget(entry.seq)?;
        observe(address, Step::Committed);
        return Ok(UnbindOutcome::Restored { to: original });
    }
    let dev = host.pci_device(address)?;
    let current = Binding::of(&dev);
    if !dev.driver.as_deref().is_some_and(is_vfio_driver) {
        return Ok(UnbindOutcome::NotBound { binding: current });
    }
    let target = Binding {
        driver: None,
        driver_override: None,
    };
    let seq = journal.begin(UNBIND_KIND, &subject, &target, &current)?;
    observe(address, Step::Journaled);
    if let Err(e) = restore_binding(host, address, &target) {
        // No half-done entry: put the device back as it was, then drop the entry. Only
        // when that fails too does the entry stay, for the next run to recover.
        match restore_binding(host, address, &current) {
            Ok(()) => journal.forget(seq)?,
            Err(back) => tracing::error!(
                device = %address,
                error = %back,
                "could not put the device back after a failed unbind; the journal keeps the step for recovery"
            ),
        }
        return Err(e);
    }
    journal.applied(seq)?;
    observe(address, Step::Committed);
    Ok(UnbindOutcome::Released { from: current })
}

/// Puts a device on `want` (driver and override), from whatever state it is in now.
/// Idempotent. Refuses while a process holds the device (an unbind from vfio-pci would
/// block until the VM lets go).
pub(crate) fn restore_binding(
    host: &HostRoot,
    address: &PciAddress,
    want: &Binding,
) -> Result<(), VfioError> {
    let dev = host.pci_device(address)?;
    if Binding::of(&dev) == *want {
        return Ok(());
    }
    let dir = device_dir(address);
    let bdf = address.to_string();
    if dev.driver != want.driver {
        let holders = usage::users_of(host, &dev)?;
        if !holders.is_empty() {
            return Err(VfioError::InUse {
                address: *address,
                holders,
            });
        }
    }
    if let Some(d) = &want.driver
        && dev.driver.as_deref() != Some(d)
    {
        // Check before unbinding, so a missing driver leaves the device where it is.
        ensure_driver_dir(host, d)?;
    }
    host.write_attr(dir.join("driver_override"), "\n")?;
    if dev.driver.is_some() && dev.driver != want.driver {
        host.write_attr(dir.join("driver/unbind"), &bdf)?;
    }
    if let Some(o) = &want.driver_override {
        host.write_attr(dir.join("driver_override"), o)?;
    }
    if let Some(d) = &want.driver
        && dev.driver.as_deref() != Some(d)
    {
        host.write_attr(PathBuf::from(PCI_DRIVERS).join(d).join("bind"), &bdf)?;
    }
    let now = host.pci_device(address)?;
    if now.driver != want.driver {
        return Err(match &want.driver {
            Some(d) => VfioError::NotBound {
                address: *address,
                driver: d.clone(),
                found: Binding::of(&now).to_string(),
            },
            None => VfioError::StillBound {
                address: *address,
                driver: dev.driver.clone().unwrap_or_default(),
                found: Binding::of(&now).to_string(),
            },
        });
    }
    Ok(())
}

/// The driver directory must exist; a driver that is a module is loaded by its name.
fn ensure_driver_dir(host: &HostRoot, driver: &str) -> Result<(), VfioError> {
    let path = PathBuf::from(PCI_DRIVERS).join(driver);
    if host.exists(&path) {
        return Ok(());
    }
    let hint = match host.modprobe(driver) {
        Ok(()) if host.exists(&path) => return Ok(()),
        Ok(()) => format!("; modprobe {driver} did not register it"),
        Err(e) => format!("; {e}"),
    };
    Err(VfioError::DriverMissing {
        driver: driver.to_string(),
        path,
        hint,
    })
}

/// Finds (loading it if allowed) the driver directory for a vfio module: the first of
/// `candidates` present under /sys/bus/pci/drivers (docs/facts/gpu.md#vfio-driver-choice: `vfio_pci` registers
/// as `vfio-pci`). Also makes sure the type1 IOMMU backend is there for the group
/// interface.
pub(crate) fn ensure_vfio_driver(
    host: &HostRoot,
    module: &str,
    candidates: &[String],
    load: bool,
) -> Result<String, VfioError> {
    let present = |host: &HostRoot| {
        candidates
            .iter()
            .find(|c| host.exists(PathBuf::from(PCI_DRIVERS).join(c.as_str())))
            .cloned()
    };
    let type1_missing = |host: &HostRoot| !host.exists("/sys/module/vfio_iommu_type1");
    if let Some(d) = present(host) {
        if load && type1_missing(host) {
            load_type1(host);
        }
        return Ok(d);
    }
    let first = candidates.first().cloned().unwrap_or_else(|| module.into());
    let path = PathBuf::from(PCI_DRIVERS).join(&first);
    if !load {
        return Err(VfioError::DriverMissing {
            driver: first,
            path,
            hint: " and [vfio] load_modules is off".into(),
        });
    }
    if let Err(e) = host.modprobe(module) {
        return Err(VfioError::DriverMissing {
            driver: first,
            path,
            hint: format!("; {e}"),
        });
    }
    if type1_missing(host) {
        load_type1(host);
    }
    present(host).ok_or_else(|| VfioError::DriverMissing {
        driver: first,
        path,
        hint: format!("; modprobe {module} succeeded but registered no such driver"),
    })
}

/// vfio_iommu_type1 backs the legacy group/container interface QEMU uses. A kernel with
/// only iommufd works without it, so failing to load it is a warning, not an error.
fn load_type1(host: &HostRoot) {
    if let Err(e) = host.modprobe("vfio_iommu_type1") {
        tracing::warn!(error = %e, "could not load vfio_iommu_type1 (fine with iommufd)");
    }
}

/// Restores `vfio.bind` and `vfio.unbind` journal entries.
#[derive(Debug, Clone, Copy)]
pub struct VfioRestorer {
    kind: &'static str,
}

impl VfioRestorer {
    pub const BIND: VfioRestorer = VfioRestorer { kind: BIND_KIND };
    pub const UNBIND: VfioRestorer = VfioRestorer { kind: UNBIND_KIND };
}

impl Restorer for VfioRestorer {
    fn kind(&self) -> &str {
        self.kind
    }

    fn restore(&self, host: &HostRoot, entry: &Entry) -> Result<(), RestoreError> {
        let address: PciAddress = entry
            .subject
            .parse()
            .map_err(|e| RestoreError::new(format!("journal entry {entry}: bad subject: {e}")))?;
        let original: Binding = entry.restore_as()?;
        restore_binding(host, &address, &original)?;
        Ok(())
    }
}
