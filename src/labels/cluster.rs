//! Writing labels to the API server: Server-Side Apply on this node's Node object (field
//! manager `cchost`, forced: the keys are ours), extended resources on the Node status,
//! or a NodeFeature object for clusters where nfd-master owns labels
//! (docs/facts/k8s.md#server-side-apply).
//!
//! SSA semantics do the bookkeeping: the applied object holds exactly our keys, and a
//! key we owned and now leave out is removed by the API server. What the server holds
//! is learnt once at start (from `managedFields`); after that a write happens only when
//! the wanted set changes, so a steady node costs no API writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use super::NodeLabels;

pub(crate) const FIELD_MANAGER: &str = "cchost";
pub(crate) const NFD_NODE_NAME_LABEL: &str = "nfd.node.kubernetes.io/node-name";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(
        "{what}: forbidden (403). The service account needs RBAC verb `{verb}` on `{resource}`{scope}: {message}"
    )]
    Forbidden {
        what: String,
        verb: String,
        resource: String,
        scope: String,
        message: String,
    },
    #[error("{what}: node {node:?} does not exist (check NODE_NAME / labels.node_name)")]
    NoNode { what: String, node: String },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("kubernetes client: {0}")]
    Client(String),
}

impl SinkError {
    /// A 403: retrying helps only after someone fixes RBAC.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, SinkError::Forbidden { .. })
    }
}

/// Every (API group, resource, verb) this module asks the API server for (`watch`: the
/// own-Node watch of [`super::own_node`], field selector `metadata.name`); the shipped
/// RBAC (deploy/kubernetes/cchost.yaml) is tested against it. `nodefeatures` only with
/// `labels.backend = "node-feature"`, in cchost's namespace.
pub const RBAC_NEEDED: &[(&str, &str, &str)] = &[
    ("", "nodes", "get"),
    ("", "nodes", "patch"),
    // The one watch on the own Node (labels::own_node: the labeler's drift check and
    // `cc.follow_label` share it): a watch with a field selector is verb `watch` alone;
    // `list` is never asked for (tests/k8s RBACFromEvidence, from the audit log).
    ("", "nodes", "watch"),
    ("", "nodes/status", "patch"),
    ("nfd.k8s-sigs.io", "nodefeatures", "get"),
    ("nfd.k8s-sigs.io", "nodefeatures", "create"),
    ("nfd.k8s-sigs.io", "nodefeatures", "patch"),
];

fn api_err(e: kube::Error, what: &str, verb: &str, resource: &str, scope: &str) -> SinkError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => SinkError::Forbidden {
            what: what.to_string(),
            verb: verb.to_string(),
            resource: resource.to_string(),
            scope: scope.to_string(),
            message: s.message.clone(),
        },
        _ => SinkError::Api {
            what: what.to_string(),
            source: e,
        },
    }
}

/// Where the labels go in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeMode {
    /// SSA on the Node (needs `nodes: get, patch`).
    Node,
    /// A NodeFeature `<node>-cchost` in this namespace (needs `nodefeatures: get, create,
    /// patch` there); nfd-master turns its `spec.labels` into Node labels.
    NodeFeature { namespace: String },
}

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub reads: u32,
    pub writes: u32,
}

pub struct KubeLabeler {
    client: Client,
    node: String,
    mode: KubeMode,
    /// Labels known to be on the server under our manager (None: not learnt yet).
    labels: Option<BTreeMap<String, String>>,
    resources: Option<BTreeMap<String, String>>,
}

fn node_feature_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nfd.k8s-sigs.io", "v1alpha1", "NodeFeature"),
        "nodefeatures",
    )
}

/// The keys under `f:<map>` that a managedFields entry owns, e.g. labels.
fn owned_keys(entry: &ManagedFieldsEntry, path: &[&str]) -> Vec<String> {
    let Some(fields) = entry.fields_v1.as_ref() else {
        return Vec::new();
    };
    let mut v = &fields.0;
    for p in path {
        match v.get(format!("f:{p}")) {
            Some(x) => v = x,
            None => return Vec::new(),
        }
    }
    v.as_object()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("f:").map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn our_entry<'a>(
    entries: &'a [ManagedFieldsEntry],
    subresource: Option<&str>,
) -> Option<&'a ManagedFieldsEntry> {
    entries.iter().find(|e| {
        e.manager.as_deref() == Some(FIELD_MANAGER)
            && e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref() == subresource
    })
}

impl KubeLabeler {
    pub fn new(client: Client, node: impl Into<String>, mode: KubeMode) -> Self {
        KubeLabeler {
            client,
            node: node.into(),
            mode,
            labels: None,
            resources: None,
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn pp() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    /// Learns what our field manager holds on the server (once).
    async fn learn(&mut self, report: &mut SyncReport) -> Result<(), SinkError> {
        if self.labels.is_some() && self.resources.is_some() {
            return Ok(());
        }
        report.reads += 1;
        let node = self
            .nodes()
            .get_opt(&self.node)
            .await
            .map_err(|e| api_err(e, "reading the Node", "get", "nodes", ""))?
            .ok_or_else(|| SinkError::NoNode {
                what: "reading the Node".into(),
                node: self.node.clone(),
            })?;
        let managed = node.metadata.managed_fields.clone().unwrap_or_default();
        let resources: BTreeMap<String, String> = our_entry(&managed, Some("status"))
            .map(|e| {
                let cap = node.status.as_ref().and_then(|s| s.capacity.as_ref());
                owned_keys(e, &["status", "capacity"])
                    .into_iter()
                    .filter_map(|k| cap.and_then(|c| c.get(&k)).map(|q| (k, q.0.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let labels: BTreeMap<String, String> = match &self.mode {
            KubeMode::Node => {
                let on_node = node.metadata.labels.clone().unwrap_or_default();
                our_entry(&managed, None)
                    .map(|e| {
                        owned_keys(e, &["metadata", "labels"])
                            .into_iter()
                            .filter_map(|k| on_node.get(&k).map(|v| (k, v.clone())))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            KubeMode::NodeFeature { namespace } => {
                report.reads += 1;
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &node_feature_resource());
                let obj = api.get_opt(&self.nf_name()).await.map_err(|e| {
                    api_err(
                        e,
                        "reading the NodeFeature",
                        "get",
                        "nodefeatures.nfd.k8s-sigs.io",
                        &format!(" in namespace {namespace}"),
                    )
                })?;
                obj.and_then(|o| o.data.get("spec")?.get("labels").cloned())
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default()
            }
        };
        self.labels = Some(labels);
        self.resources = Some(resources);
        Ok(())
    }

    /// The client this labeler writes with.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The Node this labeler keeps.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether `node` (as the server now has it) lacks a label or extended resource this
    /// labeler knows it applied, or holds another value. Only the Node backend keeps
    /// labels on the Node; extended resources are on its status in both backends.
    pub(crate) fn drifted(&self, node: &Node) -> bool {
        if self.mode == KubeMode::Node
            && let Some(want) = &self.labels
        {
            let have = node.metadata.labels.as_ref();
            if want
                .iter()
                .any(|(k, v)| have.and_then(|h| h.get(k)) != Some(v))
            {
                return true;
            }
        }
        if let Some(want) = &self.resources {
            let have = node.status.as_ref().and_then(|s| s.capacity.as_ref());
            if want
                .iter()
                .any(|(k, v)| have.and_then(|h| h.get(k)).map(|q| &q.0) != Some(v))
            {
                return true;
            }
        }
        false
    }

    /// Forgets what is known to be on the server: the next sync reads it again (once)
    /// and writes what differs.
    pub(crate) fn forget(&mut self) {
        self.labels = None;
        self.resources = None;
    }

    fn nf_name(&self) -> String {
        format!("{}-cchost", self.node)
    }

    /// Brings the server to `want`; writes only what differs from what is there.
    pub async fn sync(&mut self, want: &NodeLabels) -> Result<SyncReport, SinkError> {
        let mut report = SyncReport::default();
        self.learn(&mut report).await?;
        if self.labels.as_ref() != Some(&want.labels) {
            self.apply_labels(&want.labels).await?;
            report.writes += 1;
            self.labels = Some(want.labels.clone());
        }
        if self.resources.as_ref() != Some(&want.extended_resources) {
            self.apply_resources(&want.extended_resources).await?;
            report.writes += 1;
            self.resources = Some(want.extended_resources.clone());
        }
        Ok(report)
    }

    async fn apply_labels(&self, labels: &BTreeMap<String, String>) -> Result<(), SinkError> {
        match &self.mode {
            KubeMode::Node => {
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": { "name": self.node, "labels": labels },
                });
                self.nodes()
                    .patch(&self.node, &Self::pp(), &Patch::Apply(body))
                    .await
                    .map_err(|e| api_err(e, "applying Node labels", "patch", "nodes", ""))?;
            }
            KubeMode::NodeFeature { namespace } => {
                let name = self.nf_name();
                let body = json!({
                    "apiVersion": "nfd.k8s-sigs.io/v1alpha1",
                    "kind": "NodeFeature",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": { NFD_NODE_NAME_LABEL: self.node },
                    },
                    "spec": { "labels": labels },
                });
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &node_feature_resource());
                api.patch(&name, &Self::pp(), &Patch::Apply(body))
                    .await
                    .map_err(|e| {
                        api_err(
                            e,
                            "applying the NodeFeature",
                            "patch (and create)",
                            "nodefeatures.nfd.k8s-sigs.io",
                            &format!(" in namespace {namespace}"),
                        )
                    })?;
            }
        }
        tracing::info!(node = %self.node, count = labels.len(), "labels applied");
        Ok(())
    }

    async fn apply_resources(&self, res: &BTreeMap<String, String>) -> Result<(), SinkError> {
        let body: Value = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": self.node },
            "status": { "capacity": res },
        });
        self.nodes()
            .patch_status(&self.node, &Self::pp(), &Patch::Apply(body))
            .await
            .map_err(|e| {
                api_err(
                    e,
                    "applying extended resources on the Node status",
                    "patch",
                    "nodes/status",
                    "",
                )
            })?;
        tracing::info!(node = %self.node, ?res, "extended resources applied");
        Ok(())
    }
}

/// A client for the configured identity: the kubeconfig when one is named, otherwise
/// the in-cluster service account (never a stray `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, SinkError> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| SinkError::Client(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| SinkError::Client(format!("{}: {e}", p.display())))?
        }
        None => kube::Config::incluster()
            .map_err(|e| SinkError::Client(format!("in-cluster config: {e}")))?,
    };
    Client::try_from(config).map_err(|e| SinkError::Client(e.to_string()))
}
