//! The shipped deployment files: the DaemonSet manifest and the systemd unit. They are
//! not run against a cluster here (none can be installed); what is checked is what can
//! go wrong without one: the RBAC covers every verb the labeler uses, the pod can see
//! the host the way cchost needs, the ConfigMap is a valid config, the container's
//! arguments are accepted by this binary, and systemd parses the unit without a warning.
// Tests may unwrap, expect and panic: a failure is the test's message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cchost::config::Config;
use cchost::labels::cluster::RBAC_NEEDED;
use cchost::observe::events::RBAC_NEEDED as EVENTS_RBAC_NEEDED;
use serde::Deserialize;
use serde_json::Value;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(repo("deploy/kubernetes/cchost.yaml")).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn rbac_grants_every_verb_the_labeler_uses_and_no_more() {
    let docs = manifests();
    let mut granted: Vec<(String, String, String)> = Vec::new();
    for role in of_kind(&docs, "ClusterRole")
        .into_iter()
        .chain(of_kind(&docs, "Role"))
    {
        for rule in role["rules"].as_array().unwrap() {
            for g in strs(&rule["apiGroups"]) {
                for r in strs(&rule["resources"]) {
                    for v in strs(&rule["verbs"]) {
                        granted.push((g.into(), r.into(), v.into()));
                    }
                }
            }
        }
    }
    let mut needed: Vec<(String, String, String)> = RBAC_NEEDED
        .iter()
        .chain(EVENTS_RBAC_NEEDED)
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    granted.sort();
    needed.sort();
    assert_eq!(granted, needed);
    // NodeFeatures and Events are namespaced: NodeFeatures granted in cchost's
    // namespace, Events in `default` (the only namespace the API server accepts for an
    // Event about a Node), both bound to the DaemonSet's service account.
    let ds = of_kind(&docs, "DaemonSet")[0];
    for role in of_kind(&docs, "Role") {
        let events = role["rules"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["apiGroups"][0] == "events.k8s.io"));
        let want = if events {
            "default"
        } else {
            ds["metadata"]["namespace"].as_str().unwrap()
        };
        assert_eq!(role["metadata"]["namespace"].as_str(), Some(want));
    }
    for binding in of_kind(&docs, "RoleBinding")
        .into_iter()
        .chain(of_kind(&docs, "ClusterRoleBinding"))
    {
        let subject = &binding["subjects"][0];
        assert_eq!(
            subject["name"],
            ds["spec"]["template"]["spec"]["serviceAccountName"]
        );
        assert_eq!(subject["namespace"], ds["metadata"]["namespace"]);
    }
}

#[test]
fn the_pod_sees_the_host_as_cchost_needs() {
    let docs = manifests();
    let ds = of_kind(&docs, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    // Processes holding a GPU are only visible in the host's PID namespace.
    assert_eq!(pod["hostPID"], true);
    // Kernel uevents reach the host's network namespace whatever the pod's user
    // namespace; the API server is still found through the cluster DNS.
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let host_vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hostPath"]["path"] == "/")
        .expect("the host's / as a hostPath volume");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == host_vol["name"])
        .unwrap();
    assert_eq!(mount["mountPath"], "/host");
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    let args = strs(&c["args"]);
    let at = args.iter().position(|a| *a == "--host-root").unwrap();
    assert_eq!(args[at + 1], "/host");
    assert_eq!(args.last(), Some(&"run"));
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert!(env.contains(&("NODE_NAME", "spec.nodeName")), "{env:?}");
    assert!(env.contains(&("POD_NAMESPACE", "metadata.namespace")));
    // The log filter cchost reads (src/cli/mod.rs), not RUST_LOG.
    assert!(
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "CCHOST_LOG")
    );
}

#[test]
fn probes_ask_the_health_endpoint_the_config_opens() {
    let docs = manifests();
    let cm = of_kind(&docs, "ConfigMap")[0];
    let cfg = Config::from_toml(
        cm["data"]["config.toml"].as_str().unwrap(),
        Path::new("config.toml"),
    )
    .unwrap();
    let ds = of_kind(&docs, "DaemonSet")[0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let port_of = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let health: std::net::SocketAddr = cfg.observe.health_listen.parse().unwrap();
    let metrics: std::net::SocketAddr = cfg.observe.metrics_listen.parse().unwrap();
    assert_eq!(port_of("health"), u64::from(health.port()));
    assert_eq!(port_of("metrics"), u64::from(metrics.port()));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "health", "{probe}");
    }
}

#[test]
fn the_configmap_is_a_valid_config_and_the_arguments_parse() {
    let docs = manifests();
    let cm = of_kind(&docs, "ConfigMap")[0];
    let text = cm["data"]["config.toml"].as_str().unwrap();
    Config::from_toml(text, Path::new("config.toml")).unwrap();

    // The container's arguments, against this binary: the host root pointed at a fixture
    // host, the config at the ConfigMap's text, and `run` swapped for `plan` (which reads
    // the same config and host and returns). Usage errors exit 2.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let ds = of_kind(&docs, "DaemonSet")[0];
    let args: Vec<String> = strs(&ds["spec"]["template"]["spec"]["containers"][0]["args"])
        .iter()
        .map(|a| match *a {
            "/host" => repo("tests/host/tdx-8xh100-4nvswitch")
                .display()
                .to_string(),
            "/etc/cchost/config.toml" => cfg.display().to_string(),
            "run" => "plan".to_string(),
            a => a.to_string(),
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_cchost"))
        .args(&args)
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "{args:?}: {code:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Profile: Intel TDX"));
}

#[test]
fn systemd_parses_the_unit_without_a_warning() {
    let text = std::fs::read_to_string(repo("deploy/systemd/cchost.service")).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[0], "/usr/local/bin/cchost");
    assert_eq!(&words[1..], ["--host-root", "/", "run"]);
    assert!(
        text.contains("\nEnvironment=CCHOST_LOG="),
        "the log filter cchost reads"
    );
    // cchost speaks sd_notify (READY=1, WATCHDOG=1): tests/protocols/daemon_health.rs.
    assert!(text.contains("\nType=notify\n"), "{text}");
    assert!(text.contains("\nWatchdogSec="), "{text}");
    // systemd-analyze checks that ExecStart's binary exists: point it at this build.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("cchost.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/cchost", env!("CARGO_BIN_EXE_cchost")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd, in tests/debian-packages.txt)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It exits 0 on unknown settings and only prints them: any output is a finding.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// OpenShift: the DaemonSet's service account may `use` the `privileged` SCC (and no
/// other), bound in cchost's namespace; the pod is what only that SCC admits.
#[test]
fn openshift_binds_the_privileged_scc_to_the_service_account() {
    let text = std::fs::read_to_string(repo("deploy/openshift/cchost-scc.yaml")).unwrap();
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let role = of_kind(&docs, "ClusterRole")[0];
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(strs(&rules[0]["apiGroups"]), ["security.openshift.io"]);
    assert_eq!(strs(&rules[0]["resources"]), ["securitycontextconstraints"]);
    assert_eq!(strs(&rules[0]["resourceNames"]), ["privileged"]);
    assert_eq!(strs(&rules[0]["verbs"]), ["use"]);
    let binding = of_kind(&docs, "RoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let ds_docs = manifests();
    let ds = of_kind(&ds_docs, "DaemonSet")[0];
    let sa = ds["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let ns = ds["metadata"]["namespace"].as_str().unwrap();
    assert_eq!(binding["metadata"]["namespace"], ns);
    assert!(
        binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns),
        "{binding:?}"
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
}
