//! Generated code for the kubelet device plugin API v1beta1 (proto/deviceplugin_v1beta1.proto).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("v1beta1");

/// The only API version kubelet supports for device plugins.
pub(crate) const VERSION: &str = "v1beta1";
pub(crate) const HEALTHY: &str = "Healthy";
pub(crate) const UNHEALTHY: &str = "Unhealthy";
