//! Build steps:
//! - compiles proto/ with protox (pure Rust, no protoc) and generates the tonic code;
//! - writes the PCI device-name table (`pci_names.bin`) that `inventory::pci_names`
//!   searches. The names come from the `pci-ids` crate, used here at build time only:
//!   linked into the binary, its tables are ~20,000 structs of `&'static str` pointers,
//!   and in a position-independent executable every one of those pointers is a load-time
//!   relocation, so the whole table (~1.3 MiB) is written by the dynamic loader at start
//!   and stays resident as private memory even though cchost looks up a handful of
//!   names (docs/performance.md, "Idle memory").

use std::io::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deviceplugin_v1beta1.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    pci_names()?;
    Ok(())
}

/// Layout of `pci_names.bin` (all integers little-endian, no pointers):
/// `count: u32`, then `count` records of `key: u32` (vendor << 16 | device, sorted
/// ascending), `offset: u32`, `len: u32` into the name bytes that follow the records.
fn pci_names() -> Result<(), Box<dyn std::error::Error>> {
    let mut entries: Vec<(u32, &'static str)> = pci_ids::Vendors::iter()
        .flat_map(|v| v.devices())
        .map(|d| {
            let (vid, pid) = d.as_vid_pid();
            ((u32::from(vid) << 16) | u32::from(pid), d.name())
        })
        .collect();
    entries.sort_unstable_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    let mut records = Vec::with_capacity(4 + entries.len() * 12);
    let mut names = Vec::new();
    records.extend_from_slice(&u32::try_from(entries.len())?.to_le_bytes());
    for (key, name) in &entries {
        records.extend_from_slice(&key.to_le_bytes());
        records.extend_from_slice(&u32::try_from(names.len())?.to_le_bytes());
        records.extend_from_slice(&u32::try_from(name.len())?.to_le_bytes());
        names.extend_from_slice(name.as_bytes());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("pci_names.bin");
    let mut f = std::fs::File::create(out)?;
    f.write_all(&records)?;
    f.write_all(&names)?;
    Ok(())
}
