//! Tiny host-tree builder for the inventory's unit tests: sysfs laid out as the kernel
//! does it (devices under /sys/devices/pci…, relative symlinks for the bus view,
//! `driver`, `iommu_group` and the group's `devices/`).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use crate::host::HostRoot;

pub struct Tree {
    pub dir: tempfile::TempDir,
    pub host: HostRoot,
}

/// One PCI function to create.
#[derive(Clone)]
pub struct Func {
    pub addr: &'static str,
    pub vendor: u16,
    pub device: u16,
    pub class: u32,
    pub driver: Option<&'static str>,
    pub group: Option<u32>,
    pub numa: i32,
    pub boot_vga: Option<bool>,
}

impl Func {
    pub fn new(addr: &'static str, vendor: u16, device: u16, class: u32) -> Self {
        Func {
            addr,
            vendor,
            device,
            class,
            driver: None,
            group: None,
            numa: -1,
            boot_vga: None,
        }
    }
    pub fn driver(mut self, d: &'static str) -> Self {
        self.driver = Some(d);
        self
    }
    pub fn group(mut self, g: u32) -> Self {
        self.group = Some(g);
        self
    }
    pub fn numa(mut self, n: i32) -> Self {
        self.numa = n;
        self
    }
    pub fn boot_vga(mut self, b: bool) -> Self {
        self.boot_vga = Some(b);
        self
    }
}

impl Tree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path()).unwrap();
        Tree { dir, host }
    }

    pub fn path(&self, host_path: &str) -> PathBuf {
        self.dir.path().join(host_path.trim_start_matches('/'))
    }

    /// Writes a file (creating parents).
    pub fn file(&self, host_path: &str, contents: impl AsRef<[u8]>) -> &Self {
        let p = self.path(host_path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
        self
    }

    /// Creates a symlink at `host_path` pointing to `target` (verbatim).
    pub fn link(&self, host_path: &str, target: &str) -> &Self {
        let p = self.path(host_path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
        self
    }

    pub fn dev_dir(&self, addr: &str) -> PathBuf {
        self.path(&format!("/sys/devices/pci0000:00/{addr}"))
    }

    /// Adds a PCI function the way the kernel shows it.
    pub fn pci(&self, f: &Func) -> &Self {
        let dev = format!("/sys/devices/pci0000:00/{}", f.addr);
        let modalias = format!(
            "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
            f.vendor,
            f.device,
            f.vendor,
            0x1234,
            f.class >> 16,
            (f.class >> 8) & 0xff,
            f.class & 0xff
        );
        self.file(&format!("{dev}/vendor"), format!("{:#06x}\n", f.vendor))
            .file(&format!("{dev}/device"), format!("{:#06x}\n", f.device))
            .file(&format!("{dev}/class"), format!("{:#08x}\n", f.class))
            .file(
                &format!("{dev}/subsystem_vendor"),
                format!("{:#06x}\n", f.vendor),
            )
            .file(&format!("{dev}/subsystem_device"), "0x1234\n")
            .file(&format!("{dev}/revision"), "0xa1\n")
            .file(&format!("{dev}/numa_node"), format!("{}\n", f.numa))
            .file(&format!("{dev}/modalias"), format!("{modalias}\n"))
            .file(&format!("{dev}/driver_override"), "(null)\n")
            .link(
                &format!("/sys/bus/pci/devices/{}", f.addr),
                &format!("../../../devices/pci0000:00/{}", f.addr),
            );
        if let Some(b) = f.boot_vga {
            self.file(&format!("{dev}/boot_vga"), if b { "1\n" } else { "0\n" });
        }
        if let Some(d) = f.driver {
            fs::create_dir_all(self.path(&format!("/sys/bus/pci/drivers/{d}"))).unwrap();
            self.link(
                &format!("{dev}/driver"),
                &format!("../../../bus/pci/drivers/{d}"),
            );
        }
        if let Some(g) = f.group {
            self.link(
                &format!("{dev}/iommu_group"),
                &format!("../../../kernel/iommu_groups/{g}"),
            )
            .link(
                &format!("/sys/kernel/iommu_groups/{g}/devices/{}", f.addr),
                &format!("../../../../devices/pci0000:00/{}", f.addr),
            )
            .file(&format!("/sys/kernel/iommu_groups/{g}/type"), "DMA\n");
        }
        self
    }
}
