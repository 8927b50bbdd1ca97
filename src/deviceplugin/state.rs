//! The advertised device list of one resource, and how a new scan updates it.
//!
//! A device that was advertised and then loses its vfio node or leaves vfio-pci stays
//! in the list as Unhealthy (kubelet then stops handing it out but keeps it in capacity,
//! docs/facts/k8s.md#device-health), and turns Healthy again when it comes back.

use std::sync::Arc;

use tokio::sync::watch;

use crate::inventory::passthrough::{Discovery, Health, PassthroughDevice, numeric_key};

/// The devices of one resource, as a shared snapshot.
pub(crate) type DeviceList = Arc<Vec<PassthroughDevice>>;

/// Merges a fresh scan into the previous list of one resource.
pub(crate) fn merge(
    resource: &str,
    previous: &[PassthroughDevice],
    scan: &Discovery,
) -> Vec<PassthroughDevice> {
    let mut out: Vec<PassthroughDevice> = scan
        .devices
        .iter()
        .filter(|d| d.resource == resource)
        .cloned()
        .collect();
    for old in previous {
        if out.iter().any(|d| d.id == old.id) {
            continue;
        }
        // The same function under a new ID (iommufd renumbered it): the old ID is gone.
        if out
            .iter()
            .any(|d| d.functions.iter().any(|f| old.functions.contains(f)))
        {
            continue;
        }
        // Unreadable this time is not gone: keep the last good state until a scan can
        // read it again (a transient sysfs error must not take a device from pods).
        if let Some(why) = old.functions.iter().find_map(|f| {
            scan.skipped
                .iter()
                .find(|s| s.address == Some(*f) && s.unreadable.is_some())
        }) {
            tracing::warn!(
                resource,
                id = %old.id,
                reason = %why.reason,
                "cannot read the device this time; keeping its last state"
            );
            out.push(old.clone());
            continue;
        }
        let reason = old
            .functions
            .iter()
            .find_map(|f| {
                scan.skipped
                    .iter()
                    .find(|s| s.address == Some(*f))
                    .map(|s| format!("{f}: {}", s.reason))
            })
            .unwrap_or_else(|| "device is gone from the host".to_string());
        let mut gone = old.clone();
        gone.health = Health::Unhealthy(reason);
        out.push(gone);
    }
    out.sort_by(|a, b| numeric_key(&a.id).cmp(&numeric_key(&b.id)));
    out
}

/// Publishes a resource's list to its plugin; only real changes wake ListAndWatch.
pub(crate) fn publish(tx: &watch::Sender<DeviceList>, resource: &str, scan: &Discovery) -> bool {
    tx.send_if_modified(|cur| {
        let next = merge(resource, cur, scan);
        if next == **cur {
            return false;
        }
        for d in &next {
            let was = cur.iter().find(|c| c.id == d.id).map(|c| &c.health);
            if was != Some(&d.health) {
                match &d.health {
                    Health::Healthy => tracing::info!(resource, id = %d.id, "device healthy"),
                    Health::Unhealthy(why) => {
                        tracing::warn!(resource, id = %d.id, reason = %why, "device unhealthy")
                    }
                }
            }
        }
        *cur = Arc::new(next);
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::passthrough::{DeviceClass, Skipped, VfioMode};

    fn dev(id: &str, f: &str) -> PassthroughDevice {
        PassthroughDevice {
            id: id.into(),
            resource: "r.io/x".into(),
            class: DeviceClass::Gpu,
            model: String::new(),
            functions: vec![f.parse().unwrap()],
            numa_node: None,
            pcie_switch: None,
            device_nodes: vec![],
            health: Health::Healthy,
        }
    }

    fn scan(devices: Vec<PassthroughDevice>, skipped: Vec<Skipped>) -> Discovery {
        Discovery {
            mode: VfioMode::Legacy,
            devices,
            skipped,
        }
    }

    #[test]
    fn a_device_that_leaves_turns_unhealthy_and_comes_back() {
        let (tx, rx) = watch::channel(DeviceList::default());
        assert!(publish(
            &tx,
            "r.io/x",
            &scan(
                vec![dev("3", "0000:01:00.0"), dev("4", "0000:02:00.0")],
                vec![]
            )
        ));
        assert!(!publish(
            &tx,
            "r.io/x",
            &scan(
                vec![dev("3", "0000:01:00.0"), dev("4", "0000:02:00.0")],
                vec![]
            )
        ));
        let skipped = vec![Skipped::because(
            "0000:02:00.0".parse().unwrap(),
            "bound to nvidia, not to a vfio driver",
        )];
        assert!(publish(
            &tx,
            "r.io/x",
            &scan(vec![dev("3", "0000:01:00.0")], skipped)
        ));
        let list = rx.borrow().clone();
        assert_eq!(list.len(), 2);
        let Health::Unhealthy(why) = &list[1].health else {
            panic!("{list:?}")
        };
        assert!(why.contains("nvidia"), "{why}");
        assert!(publish(
            &tx,
            "r.io/x",
            &scan(
                vec![dev("3", "0000:01:00.0"), dev("4", "0000:02:00.0")],
                vec![]
            )
        ));
        assert!(rx.borrow().iter().all(|d| d.health.is_healthy()));
    }

    /// Issue 13 item 5: a device whose files cannot be read this time keeps its last
    /// good state; only a scan that reads it as gone (or ineligible) changes it.
    #[test]
    fn an_unreadable_device_keeps_its_last_state() {
        let prev = vec![dev("3", "0000:01:00.0")];
        let unreadable = Skipped {
            address: Some("0000:01:00.0".parse().unwrap()),
            reason: "/sys/bus/pci/devices/0000:01:00.0/vendor: Input/output error".into(),
            unreadable: Some(crate::inventory::passthrough::Unreadable {
                file: "/sys/bus/pci/devices/0000:01:00.0/vendor".into(),
                error: "Input/output error".into(),
            }),
        };
        let next = merge("r.io/x", &prev, &scan(vec![], vec![unreadable]));
        assert_eq!(next, prev);
        let gone = merge("r.io/x", &prev, &scan(vec![], vec![]));
        assert!(!gone[0].health.is_healthy());
    }

    #[test]
    fn a_renumbered_function_drops_its_old_id() {
        let prev = vec![dev("7", "0000:01:00.0")];
        let next = merge(
            "r.io/x",
            &prev,
            &scan(vec![dev("9", "0000:01:00.0")], vec![]),
        );
        assert_eq!(
            next.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["9"]
        );
    }
}
