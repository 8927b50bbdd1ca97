//! GetPreferredAllocation: which of the offered devices to give a container.
//!
//! The rule (also in docs/deviceplugin.md):
//! 1. Every `must_include` ID is in the answer.
//! 2. The target NUMA node is the most common NUMA node of the must-include devices;
//!    with none, the NUMA node that offers the most available devices (ties: the lower
//!    node; devices without NUMA affinity come last).
//! 3. Devices are then added one by one, preferring, in order: a device on the target
//!    NUMA node; a device behind a PCIe switch already used by the answer (else behind
//!    the switch that offers the most devices); the lower numeric ID.
//!
//! Bad input is an error that names it, never a panic.

use std::collections::{BTreeMap, BTreeSet};

use crate::host::pci::PciAddress;
use crate::inventory::passthrough::{PassthroughDevice, numeric_key};

pub(crate) fn preferred<'a>(
    devices: &'a [PassthroughDevice],
    available: &[String],
    must_include: &[String],
    size: i32,
) -> Result<Vec<String>, String> {
    let find = |id: &str| -> Result<&PassthroughDevice, String> {
        devices
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| format!("unknown device ID {id:?}"))
    };
    let size = usize::try_from(size).map_err(|_| format!("allocation_size {size} is negative"))?;
    let mut chosen: Vec<&PassthroughDevice> = Vec::new();
    for id in must_include {
        let d = find(id)?;
        if !chosen.iter().any(|c| c.id == d.id) {
            chosen.push(d);
        }
    }
    if chosen.len() > size {
        return Err(format!(
            "{} must-include devices but allocation_size is {size}",
            chosen.len()
        ));
    }
    let mut pool: Vec<&PassthroughDevice> = Vec::new();
    for id in available {
        let d = find(id)?;
        if !chosen.iter().any(|c| c.id == d.id) && !pool.iter().any(|p| p.id == d.id) {
            pool.push(d);
        }
    }
    if chosen.len() + pool.len() < size {
        return Err(format!(
            "allocation_size {size} is more than the {} devices offered",
            chosen.len() + pool.len()
        ));
    }

    // Rule 2: the target NUMA node.
    let numa_rank = |n: Option<u32>| n.map_or(u64::MAX, u64::from);
    let most_common = |set: &[&PassthroughDevice]| -> Option<Option<u32>> {
        let mut count: BTreeMap<u64, (usize, Option<u32>)> = BTreeMap::new();
        for d in set {
            count
                .entry(numa_rank(d.numa_node))
                .or_insert((0, d.numa_node))
                .0 += 1;
        }
        // max count, ties: lowest rank (BTreeMap iterates ascending; keep the first max)
        let mut best: Option<(usize, Option<u32>)> = None;
        for (_, (n, node)) in count {
            if best.is_none_or(|(b, _)| n > b) {
                best = Some((n, node));
            }
        }
        best.map(|(_, node)| node)
    };
    let target = if chosen.is_empty() {
        most_common(&pool)
    } else {
        most_common(&chosen)
    }
    .flatten();

    // Switch popularity among the pool (for the first pick of a new switch).
    let mut per_switch: BTreeMap<Option<PciAddress>, usize> = BTreeMap::new();
    for d in &pool {
        if d.pcie_switch.is_some() {
            *per_switch.entry(d.pcie_switch).or_default() += 1;
        }
    }
    let max_on_switch = per_switch.values().copied().max().unwrap_or(0);

    while chosen.len() < size {
        let used: BTreeSet<PciAddress> = chosen.iter().filter_map(|d| d.pcie_switch).collect();
        let key = |d: &'a PassthroughDevice| {
            let numa_miss = usize::from(target.is_some() && d.numa_node != target);
            let switch_rank = match d.pcie_switch {
                Some(s) if used.contains(&s) => 0,
                Some(_) => 1 + max_on_switch - per_switch.get(&d.pcie_switch).copied().unwrap_or(0),
                None => 2 + max_on_switch,
            };
            (numa_miss, switch_rank, numeric_key(&d.id))
        };
        let Some(best) = pool.iter().enumerate().min_by_key(|(_, d)| key(d)) else {
            break;
        };
        let i = best.0;
        chosen.push(pool.remove(i));
    }
    Ok(chosen.into_iter().map(|d| d.id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::passthrough::{DeviceClass, Health};

    fn dev(id: &str, numa: Option<u32>, switch: Option<&str>) -> PassthroughDevice {
        PassthroughDevice {
            id: id.into(),
            resource: "nvidia.com/pgpu".into(),
            class: DeviceClass::Gpu,
            model: String::new(),
            functions: vec![],
            numa_node: numa,
            pcie_switch: switch.map(|s| s.parse().unwrap()),
            device_nodes: vec![],
            health: Health::Healthy,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn hgx() -> Vec<PassthroughDevice> {
        // 8 GPUs: NUMA 0 = switches A (10, 11) and B (12, 13); NUMA 1 = C (20, 21), D (22, 23)
        vec![
            dev("10", Some(0), Some("0000:10:00.0")),
            dev("11", Some(0), Some("0000:10:00.0")),
            dev("12", Some(0), Some("0000:20:00.0")),
            dev("13", Some(0), Some("0000:20:00.0")),
            dev("20", Some(1), Some("0000:90:00.0")),
            dev("21", Some(1), Some("0000:90:00.0")),
            dev("22", Some(1), Some("0000:a0:00.0")),
            dev("23", Some(1), Some("0000:a0:00.0")),
        ]
    }

    #[test]
    fn follows_must_include_numa_then_switch() {
        let d = hgx();
        let all = ids(&["10", "11", "12", "13", "20", "21", "22", "23"]);
        assert_eq!(
            preferred(&d, &all, &ids(&["22"]), 2).unwrap(),
            ids(&["22", "23"])
        );
        assert_eq!(
            preferred(&d, &all, &ids(&["21"]), 4).unwrap(),
            ids(&["21", "20", "22", "23"])
        );
        let some = ids(&["11", "13", "20", "21", "22"]);
        // NUMA 1 offers 3 devices, NUMA 0 two: start on NUMA 1, keep to one switch.
        assert_eq!(preferred(&d, &some, &[], 2).unwrap(), ids(&["20", "21"]));
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        let d = hgx();
        assert!(
            preferred(&d, &ids(&["99"]), &[], 1)
                .unwrap_err()
                .contains("\"99\"")
        );
        assert!(
            preferred(&d, &ids(&["10"]), &ids(&["nope"]), 1)
                .unwrap_err()
                .contains("nope")
        );
        assert!(preferred(&d, &ids(&["10"]), &[], -1).is_err());
        assert!(preferred(&d, &ids(&["10"]), &[], 2).is_err());
        assert!(preferred(&d, &ids(&["10"]), &ids(&["10", "11"]), 1).is_err());
        assert_eq!(
            preferred(&d, &ids(&["10", "10"]), &[], 0).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(preferred(&[], &[], &[], 0).unwrap(), Vec::<String>::new());
    }
}
