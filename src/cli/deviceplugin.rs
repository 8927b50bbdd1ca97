//! `cchost device-plugin query`: ask a running plugin what kubelet would see, over its
//! socket, the way kubelet asks (for operators, and for the VM tests).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cchost::deviceplugin::api::{self, device_plugin_client::DevicePluginClient};
use cchost::deviceplugin::endpoint::socket_name;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::Endpoint;

use super::Global;
use super::output::outln;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the plugin's device list (and an Allocate answer) as JSON.
    Query(QueryArgs),
}

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Resource name (default: device_plugin.gpu_resource).
    #[arg(long)]
    pub resource: Option<String>,
    /// Device IDs to ask Allocate for (nothing is reserved; Allocate only describes).
    #[arg(long, value_delimiter = ',')]
    pub allocate: Vec<String>,
}

pub fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let Command::Query(a) = c;
    let cfg = &g.config.device_plugin;
    let resource = a.resource.unwrap_or_else(|| cfg.gpu_resource.clone());
    let host_path = PathBuf::from(&cfg.socket_dir).join(socket_name(&resource));
    let local = g.host.socket_path(&host_path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let target = local.clone();
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let p = target.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
            }))
            .await
            .with_context(|| format!("cannot connect to {}", host_path.display()))?;
        let mut client = DevicePluginClient::new(channel);
        let mut stream = client
            .list_and_watch(api::Empty {})
            .await
            .context("ListAndWatch")?
            .into_inner();
        let list = stream
            .message()
            .await
            .context("ListAndWatch")?
            .context("ListAndWatch ended without a list")?;
        let devices: Vec<serde_json::Value> = list
            .devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "id": d.id,
                    "health": d.health,
                    "numa": d.topology.as_ref().map(|t| t.nodes.iter().map(|n| n.id).collect::<Vec<_>>()),
                })
            })
            .collect();
        let mut out = serde_json::json!({ "resource": resource, "devices": devices });
        if !a.allocate.is_empty() {
            let req = api::AllocateRequest {
                container_requests: vec![api::ContainerAllocateRequest {
                    devices_ids: a.allocate.clone(),
                }],
            };
            out["allocate"] = match client.allocate(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let c = r.container_responses.first().cloned().unwrap_or_default();
                    serde_json::json!({
                        "cdi_devices": c.cdi_devices.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
                        "devices": c.devices.iter().map(|d| serde_json::json!({
                            "container_path": d.container_path, "host_path": d.host_path, "permissions": d.permissions
                        })).collect::<Vec<_>>(),
                        "envs": c.envs,
                    })
                }
                Err(s) => serde_json::json!({ "error": s.message() }),
            };
        }
        outln!("{}", serde_json::to_string_pretty(&out)?);
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
