//! Simulated FSP falcon EMEM: the port control/data registers of every channel and the
//! command/message queues, at the documented offsets. The firmware answers channel 2.

use crate::gpu::cc::regs;

/// 8 channels of 1 KiB.
pub const EMEM_BYTES: usize = 8 * 1024;
pub const CHANNELS: u32 = 8;

#[derive(Debug, Clone)]
pub struct Emem {
    pub mem: Vec<u32>,
    pub ctrl: [u32; CHANNELS as usize],
    /// Current byte offset of each port (advances with auto-increment).
    pub offset: [u32; CHANNELS as usize],
    pub cmd_head: [u32; CHANNELS as usize],
    pub cmd_tail: [u32; CHANNELS as usize],
    pub msg_head: [u32; CHANNELS as usize],
    pub msg_tail: [u32; CHANNELS as usize],
}

/// What a register write asks the firmware to do.
pub enum EmemEvent {
    None,
    /// The host rang the doorbell of a channel.
    Doorbell,
}

impl Emem {
    pub fn new() -> Self {
        let mut e = Emem {
            mem: vec![0; EMEM_BYTES / 4],
            ctrl: [0; CHANNELS as usize],
            offset: [0; CHANNELS as usize],
            cmd_head: [0; CHANNELS as usize],
            cmd_tail: [0; CHANNELS as usize],
            msg_head: [0; CHANNELS as usize],
            msg_tail: [0; CHANNELS as usize],
        };
        e.reset_queues();
        e
    }

    /// Queues empty, pointing at each channel's window (as after an FSP boot).
    pub fn reset_queues(&mut self) {
        for ch in 0..CHANNELS {
            let base = ch * regs::EMEM_CHANNEL_BYTES;
            let i = ch as usize;
            self.cmd_head[i] = base;
            self.cmd_tail[i] = base;
            self.msg_head[i] = base;
            self.msg_tail[i] = base;
        }
    }

    /// The channel and register kind an offset names, if it is an EMEM register.
    fn decode(offset: u32) -> Option<(u32, u8)> {
        for ch in 0..CHANNELS {
            let kind = match offset {
                o if o == regs::emem_ctrl(ch) => 0,
                o if o == regs::emem_data(ch) => 1,
                o if o == regs::cmd_queue_head(ch) => 2,
                o if o == regs::cmd_queue_tail(ch) => 3,
                o if o == regs::msg_queue_head(ch) => 4,
                o if o == regs::msg_queue_tail(ch) => 5,
                _ => continue,
            };
            return Some((ch, kind));
        }
        None
    }

    fn word_index(&self, ch: usize) -> usize {
        (self.offset[ch] as usize % EMEM_BYTES) / 4
    }

    pub fn read(&mut self, offset: u32) -> Option<u32> {
        let (ch, kind) = Self::decode(offset)?;
        let i = ch as usize;
        Some(match kind {
            0 => self.ctrl[i],
            1 => {
                let v = self.mem[self.word_index(i)];
                if self.ctrl[i] & regs::EMEMC_AINCR != 0 {
                    self.offset[i] = (self.offset[i] + 4) % EMEM_BYTES as u32;
                }
                v
            }
            2 => self.cmd_head[i],
            3 => self.cmd_tail[i],
            4 => self.msg_head[i],
            _ => self.msg_tail[i],
        })
    }

    /// Returns `None` when the offset is not an EMEM register.
    pub fn write(&mut self, offset: u32, value: u32) -> Option<EmemEvent> {
        let (ch, kind) = Self::decode(offset)?;
        let i = ch as usize;
        match kind {
            0 => {
                self.ctrl[i] = value;
                self.offset[i] = value & regs::EMEMC_OFFSET_MASK;
            }
            1 => {
                let w = self.word_index(i);
                self.mem[w] = value;
                if self.ctrl[i] & regs::EMEMC_AINCW != 0 {
                    self.offset[i] = (self.offset[i] + 4) % EMEM_BYTES as u32;
                }
            }
            2 => {
                self.cmd_head[i] = value;
                return Some(EmemEvent::Doorbell);
            }
            3 => self.cmd_tail[i] = value,
            4 => self.msg_head[i] = value,
            _ => self.msg_tail[i] = value,
        }
        Some(EmemEvent::None)
    }

    /// The command the host queued on a channel (head..=tail), if well-formed.
    pub fn take_command(&self, ch: u32) -> Option<Vec<u32>> {
        let i = ch as usize;
        let (head, tail) = (self.cmd_head[i], self.cmd_tail[i]);
        if head == tail {
            // head == tail is an empty queue (how the host tells "drained").
            return None;
        }
        if tail < head || !head.is_multiple_of(4) || tail as usize >= EMEM_BYTES {
            return None;
        }
        Some(self.mem[head as usize / 4..=tail as usize / 4].to_vec())
    }

    /// Consumes the command and posts a reply in the channel window.
    pub fn post_reply(&mut self, ch: u32, reply: &[u32]) {
        let i = ch as usize;
        let base = ch * regs::EMEM_CHANNEL_BYTES;
        self.cmd_tail[i] = self.cmd_head[i];
        let start = base as usize / 4;
        let n = reply.len().min(regs::EMEM_CHANNEL_BYTES as usize / 4);
        self.mem[start..start + n].copy_from_slice(&reply[..n]);
        self.msg_head[i] = base;
        self.msg_tail[i] = base + (n as u32 - 1) * 4;
    }
}

impl Default for Emem {
    fn default() -> Self {
        Self::new()
    }
}
