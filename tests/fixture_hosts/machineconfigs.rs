//! machineconfigs/ holds the rendered MachineConfigs; this fails when a file drifts from
//! what `cchost render machineconfig` produces with the default config. Regenerate with
//! `CCHOST_REGENERATE=1 cargo test --test fixture_hosts machineconfigs`.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use cchost::config::Config;
use cchost::hostcfg::machineconfig::{Role, name, render};
use cchost::hostcfg::profile::Platform;

#[test]
fn rendered_set_matches_the_renderer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("machineconfigs");
    let regenerate = std::env::var_os("CCHOST_REGENERATE").is_some();
    let mut expected = Vec::new();
    for platform in [Platform::Tdx, Platform::Snp] {
        for gpu in [false, true] {
            for role in [Role::Worker, Role::Master] {
                let file = format!("{}.yaml", name(platform, gpu, role));
                let yaml = render(platform, gpu, role, &Config::default()).unwrap();
                let path = dir.join(&file);
                if regenerate {
                    std::fs::write(&path, &yaml).unwrap();
                }
                let on_disk = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    on_disk, yaml,
                    "machineconfigs/{file} drifted from the renderer; regenerate it"
                );
                expected.push(file);
            }
        }
    }
    // No stale files either.
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    present.sort();
    expected.sort();
    assert_eq!(present, expected);
}
