//! Everything that can go wrong while querying or switching one device.

use super::bar0::Bar0Error;
use super::mode::CcState;

#[derive(Debug, thiserror::Error)]
pub enum CcError {
    #[error(transparent)]
    Bar0(#[from] Bar0Error),
    #[error(
        "BAR0 reads all-ones at {offset:#x}: the device is runtime-suspended, in reset, \
         behind the boot-time BAR0 firewall, or broken"
    )]
    AllOnes { offset: u32 },
    #[error("BOOT_0 reads {boot0:#010x}: priv security fault; BAR0 is not accessible")]
    SecurityFault { boot0: u32 },
    #[error(
        "FSP did not report boot-complete: register {reg:#x} = {last:#x} after {waited_ms} ms \
         (expected 0xff)"
    )]
    BootTimeout {
        reg: u32,
        last: u32,
        waited_ms: u128,
    },
    #[error(
        "FSP RPC timed out after {waited_ms} ms: {detail} (is a driver or VM still using the GPU?)"
    )]
    RpcTimeout { detail: String, waited_ms: u128 },
    #[error("FSP {transport} mailbox reports an error: info register {info:#010x}")]
    Transport { transport: &'static str, info: u32 },
    #[error(
        "FSP refused the request with status {status:#x} (unknown knob on this firmware, \
         in-band control disabled, or the GPU is in use); reply {reply:x?}"
    )]
    FspStatus { status: u32, reply: Vec<u32> },
    #[error("FSP protocol error: {0}")]
    Protocol(String),
    #[error("reset failed: {0}")]
    Reset(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "{source}; the knobs staged so far could not be put back ({knobs}): the next reset applies them"
    )]
    LeftStaged {
        #[source]
        source: Box<CcError>,
        knobs: String,
    },
    #[error("reading PCI config space: {0}")]
    Config(String),
    #[error(
        "the Blackwell boot-time BAR0 firewall (NVIDIA DVSEC bit 20) was still up after \
         {waited_ms} ms"
    )]
    FirewallTimeout { waited_ms: u128 },
    #[error("journal: {0}; nothing was written to this device")]
    Journal(String),
    #[error("after the reset the device reports {found}, not the requested {expected}")]
    Mismatch { expected: String, found: CcState },
}
