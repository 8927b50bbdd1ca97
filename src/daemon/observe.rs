//! The `[observe]` services of `cchost run`: the health endpoint, the metrics endpoint
//! (one listener when both have the same address) and the poster of Kubernetes Events.
//! A listener that cannot bind fails its service, which the supervisor retries; the
//! health endpoint then says which (docs/observability.md).

use tokio::net::TcpListener;

use super::{Context, Daemon, DaemonError};
use crate::config::{KubeEvents, LabelsConfig};
use crate::observe::http::{self, Routes};

fn listener_service(
    address: String,
    health: bool,
    metrics: bool,
) -> impl Fn(Context) -> super::ServiceFuture + Send + Sync + 'static {
    move |ctx: Context| {
        let address = address.clone();
        Box::pin(async move {
            let listener = TcpListener::bind(&address)
                .await
                .map_err(|e| DaemonError::Service {
                    service: ctx.name.clone(),
                    message: format!("cannot listen on {address}: {e}"),
                })?;
            tracing::info!(%address, health, metrics, "serving {}", ctx.name);
            ctx.serving();
            let routes = Routes {
                health: health.then(|| ctx.health.clone()),
                metrics,
            };
            http::serve(listener, routes, ctx.shutdown.clone()).await;
            Ok(())
        })
    }
}

/// Whether Kubernetes Events are raised: `kube_events = "auto"` and a cluster to
/// raise them in.
fn events_wanted(mode: KubeEvents, labels: &LabelsConfig) -> bool {
    mode == KubeEvents::Auto
        && (labels.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())
}

/// The namespace the Events go to. An Event about a Node (cluster-scoped) is valid only
/// in `default` (or no namespace): the API server refuses any other with
/// `involvedObject.namespace: Invalid` (kubernetes pkg/apis/core/validation/events.go),
/// which the real cluster of tests/k8s showed when cchost posted into its own namespace.
/// kubelet's Node events live there too.
const EVENTS_NAMESPACE: &str = "default";

async fn post_events(ctx: Context) -> Result<(), DaemonError> {
    let fail = |message: String| DaemonError::Service {
        service: ctx.name.clone(),
        message,
    };
    let node =
        crate::labels::service::node_name(&ctx.config.labels, &ctx.host).ok_or_else(|| {
            fail("no node name: set NODE_NAME (downward API) or labels.node_name".into())
        })?;
    let client = crate::labels::cluster::client(ctx.config.labels.kubeconfig.as_deref())
        .await
        .map_err(|e| fail(e.to_string()))?;
    ctx.serving();
    let ns = EVENTS_NAMESPACE.to_string();
    tracing::info!(node, namespace = %ns, "raising Kubernetes Events on the Node");
    crate::observe::events::post_until_shutdown(client, &ns, &node, ctx.shutdown.clone()).await;
    Ok(())
}

/// Adds the services `[observe]` asks for.
pub(crate) fn add_services(d: &mut Daemon) {
    let o = d.config().observe.clone();
    let health = (!o.health_listen.is_empty()).then_some(o.health_listen.clone());
    let metrics = (!o.metrics_listen.is_empty()).then_some(o.metrics_listen.clone());
    match (health, metrics) {
        (Some(h), Some(m)) if h == m => {
            d.add_service("health-endpoint", listener_service(h, true, true));
        }
        (h, m) => {
            if let Some(h) = h {
                d.add_service("health-endpoint", listener_service(h, true, false));
            }
            if let Some(m) = m {
                d.add_service("metrics-endpoint", listener_service(m, false, true));
            }
        }
    }
    if events_wanted(o.kube_events, &d.config().labels) {
        d.add_service("events", |ctx| Box::pin(post_events(ctx)));
    }
}
