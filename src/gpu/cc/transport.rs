//! The two in-band mailboxes to the FSP (docs/facts/gpu.md#cc-registers). Both move whole packets of
//! dwords; framing is [`super::fsp`]'s business.

use std::time::{Duration, Instant};

use super::bar0::Bar0;
use super::device::Timing;
use super::error::CcError;
use super::regs::{self, TransportKind};

/// One packet out, one packet back.
pub trait FspTransport {
    fn send(&self, packet: &[u32]) -> Result<(), CcError>;
    fn receive(&self) -> Result<Vec<u32>, CcError>;
}

/// Builds the transport a family uses.
pub(crate) fn for_kind<'a>(
    kind: TransportKind,
    bar0: &'a dyn Bar0,
    timing: &'a Timing,
) -> Box<dyn FspTransport + 'a> {
    match kind {
        TransportKind::Emem => Box::new(Emem {
            bar0,
            timing,
            channel: regs::FSP_EMEM_CHANNEL,
        }),
        TransportKind::Mnoc => Box::new(Mnoc {
            bar0,
            timing,
            port: regs::MNOC_PORT,
        }),
    }
}

/// Polls `f` until it returns `Some`, or the deadline passes (`None`).
fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Result<Option<T>, CcError>,
) -> Result<Option<T>, CcError> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(Some(v));
        }
        if start.elapsed() >= timeout {
            return Ok(None);
        }
        std::thread::sleep(interval);
    }
}

/// FSP falcon EMEM channel with command and message queues (Hopper GPUs, LS10 NVSwitch).
pub(crate) struct Emem<'a> {
    pub bar0: &'a dyn Bar0,
    pub timing: &'a Timing,
    pub channel: u32,
}

impl Emem<'_> {
    fn base(&self) -> u32 {
        self.channel * regs::EMEM_CHANNEL_BYTES
    }

    fn cmd_queue(&self) -> Result<(u32, u32), CcError> {
        Ok((
            self.bar0.read32(regs::cmd_queue_head(self.channel))?,
            self.bar0.read32(regs::cmd_queue_tail(self.channel))?,
        ))
    }

    fn msg_queue(&self) -> Result<(u32, u32), CcError> {
        Ok((
            self.bar0.read32(regs::msg_queue_head(self.channel))?,
            self.bar0.read32(regs::msg_queue_tail(self.channel))?,
        ))
    }
}

impl FspTransport for Emem<'_> {
    fn send(&self, packet: &[u32]) -> Result<(), CcError> {
        let bytes = packet.len() * 4;
        if packet.is_empty() || bytes > regs::EMEM_CHANNEL_BYTES as usize {
            return Err(CcError::Protocol(format!(
                "EMEM packet of {bytes} bytes (1..=1024 allowed)"
            )));
        }
        // The FSP empties the command queue when it takes a command; a queue that stays
        // full means the FSP is busy with someone else's request (docs/facts/gpu.md#in-use).
        let start = Instant::now();
        let drained = poll(self.timing.rpc, self.timing.poll, || {
            let (h, t) = self.cmd_queue()?;
            Ok((h == t).then_some(()))
        })?;
        if drained.is_none() {
            let (h, t) = self.cmd_queue()?;
            return Err(CcError::RpcTimeout {
                detail: format!("EMEM command queue not drained: head {h} != tail {t}"),
                waited_ms: start.elapsed().as_millis(),
            });
        }
        let (mh, mt) = self.msg_queue()?;
        if mh != mt {
            // A stale reply nobody acknowledged (an earlier run was interrupted): ack it so
            // it cannot be mistaken for the answer to this request.
            tracing::warn!(head = mh, tail = mt, "discarding a stale FSP reply");
            self.bar0.write32(regs::msg_queue_tail(self.channel), mh)?;
        }
        let base = self.base();
        self.bar0.write32(
            regs::emem_ctrl(self.channel),
            (base & regs::EMEMC_OFFSET_MASK) | regs::EMEMC_AINCW,
        )?;
        for &d in packet {
            self.bar0.write32(regs::emem_data(self.channel), d)?;
        }
        // The tail names the last dword; writing the head rings the doorbell.
        let last = base + (packet.len() as u32 - 1) * 4;
        self.bar0
            .write32(regs::cmd_queue_tail(self.channel), last)?;
        self.bar0
            .write32(regs::cmd_queue_head(self.channel), base)?;
        Ok(())
    }

    fn receive(&self) -> Result<Vec<u32>, CcError> {
        let start = Instant::now();
        let got = poll(self.timing.rpc, self.timing.poll, || {
            let (h, t) = self.msg_queue()?;
            Ok((h != t).then_some((h, t)))
        })?;
        let Some((head, tail)) = got else {
            let (h, t) = self.cmd_queue()?;
            return Err(CcError::RpcTimeout {
                detail: format!(
                    "no reply in the EMEM message queue (command queue head {h}, tail {t})"
                ),
                waited_ms: start.elapsed().as_millis(),
            });
        };
        let base = self.base();
        if head != base || tail < head || tail - head + 4 > regs::EMEM_CHANNEL_BYTES {
            // Ack so the next request starts clean, then refuse the garbage.
            self.bar0
                .write32(regs::msg_queue_tail(self.channel), head)?;
            return Err(CcError::Protocol(format!(
                "EMEM message queue head {head:#x} tail {tail:#x} outside channel window {base:#x}"
            )));
        }
        let words = ((tail - head) / 4 + 1) as usize;
        self.bar0.write32(
            regs::emem_ctrl(self.channel),
            (head & regs::EMEMC_OFFSET_MASK) | regs::EMEMC_AINCR,
        )?;
        let mut out = Vec::with_capacity(words);
        for _ in 0..words {
            out.push(self.bar0.read32(regs::emem_data(self.channel))?);
        }
        // Acknowledge: tail back to head empties the message queue.
        self.bar0
            .write32(regs::msg_queue_tail(self.channel), head)?;
        Ok(out)
    }
}

/// FSP MNOC mailbox (Blackwell GPUs).
pub(crate) struct Mnoc<'a> {
    pub bar0: &'a dyn Bar0,
    pub timing: &'a Timing,
    pub port: u32,
}

impl Mnoc<'_> {
    fn check_error(&self, reg: u32) -> Result<u32, CcError> {
        let info = self.bar0.read32(reg)?;
        if info == u32::MAX {
            return Err(CcError::AllOnes { offset: reg });
        }
        if info & regs::MNOC_ERROR != 0 {
            return Err(CcError::Transport {
                transport: "MNOC",
                info,
            });
        }
        Ok(info)
    }

    fn wait_bit(&self, reg: u32, bit: u32, what: &str) -> Result<(), CcError> {
        let start = Instant::now();
        let ok = poll(self.timing.rpc, self.timing.poll, || {
            Ok((self.check_error(reg)? & bit != 0).then_some(()))
        })?;
        ok.ok_or_else(|| CcError::RpcTimeout {
            detail: format!("MNOC {what} never set (register {reg:#x})"),
            waited_ms: start.elapsed().as_millis(),
        })
    }
}

impl FspTransport for Mnoc<'_> {
    fn send(&self, packet: &[u32]) -> Result<(), CcError> {
        let bytes = packet.len() * 4;
        if packet.is_empty() || bytes > regs::MNOC_MAX_PACKET {
            return Err(CcError::Protocol(format!(
                "MNOC packet of {bytes} bytes (1..={} allowed)",
                regs::MNOC_MAX_PACKET
            )));
        }
        let info = regs::mnoc_recv_info(self.port);
        self.wait_bit(info, regs::MNOC_READY, "receive-ready")?;
        self.bar0.write32(info, bytes as u32 | regs::MNOC_NEW_MSG)?;
        for (i, &d) in packet.iter().enumerate() {
            if (i * 4) % regs::MNOC_CREDIT_BYTES == 0 {
                self.wait_bit(info, regs::MNOC_CREDITS, "credits")?;
            }
            self.bar0.write32(regs::mnoc_recv_data(self.port), d)?;
        }
        self.check_error(info)?;
        Ok(())
    }

    fn receive(&self) -> Result<Vec<u32>, CcError> {
        let info_reg = regs::mnoc_send_info(self.port);
        self.wait_bit(info_reg, regs::MNOC_READY, "message-ready")?;
        let size = (self.bar0.read32(info_reg)? & regs::MNOC_SIZE_MASK) as usize;
        if size == 0 || !size.is_multiple_of(4) || size > regs::MNOC_MAX_PACKET {
            return Err(CcError::Protocol(format!("MNOC reply size {size} bytes")));
        }
        let mut out = Vec::with_capacity(size / 4);
        for _ in 0..size / 4 {
            out.push(self.bar0.read32(regs::mnoc_send_data(self.port))?);
        }
        self.check_error(info_reg)?;
        Ok(out)
    }
}
