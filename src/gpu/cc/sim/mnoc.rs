//! Simulated FSP MNOC mailbox, port 0 (Blackwell), at the documented offsets.

use std::collections::VecDeque;

use crate::gpu::cc::regs;

#[derive(Debug, Clone, Default)]
pub struct Mnoc {
    /// Host -> FSP message being received: announced size in bytes, dwords so far.
    incoming_size: Option<usize>,
    incoming: Vec<u32>,
    /// FSP -> host reply waiting to be popped.
    outgoing: VecDeque<u32>,
    outgoing_size: u32,
    /// Error bit of the receive mailbox (bad size, overrun).
    recv_error: bool,
}

pub enum MnocEvent {
    None,
    /// A complete message arrived.
    Message(Vec<u32>),
}

impl Mnoc {
    pub fn reset(&mut self) {
        *self = Mnoc::default();
    }

    pub fn read(&mut self, offset: u32) -> Option<u32> {
        let p = regs::MNOC_PORT;
        if offset == regs::mnoc_send_info(p) {
            let mut v = self.outgoing_size & regs::MNOC_SIZE_MASK;
            if !self.outgoing.is_empty() {
                v |= regs::MNOC_READY;
            }
            return Some(v);
        }
        if offset == regs::mnoc_send_data(p) {
            let v = self.outgoing.pop_front().unwrap_or(0);
            if self.outgoing.is_empty() {
                self.outgoing_size = 0;
            }
            return Some(v);
        }
        if offset == regs::mnoc_recv_info(p) {
            // Ready for a new message unless one is half received; credits always there.
            let mut v = regs::MNOC_CREDITS;
            if self.incoming_size.is_none() {
                v |= regs::MNOC_READY;
            }
            if self.recv_error {
                v |= regs::MNOC_ERROR;
            }
            return Some(v);
        }
        if offset == regs::mnoc_recv_data(p) {
            return Some(0);
        }
        None
    }

    pub fn write(&mut self, offset: u32, value: u32) -> Option<MnocEvent> {
        let p = regs::MNOC_PORT;
        if offset == regs::mnoc_recv_info(p) {
            if value & regs::MNOC_NEW_MSG != 0 {
                let size = (value & regs::MNOC_SIZE_MASK) as usize;
                if size == 0 || !size.is_multiple_of(4) || size > regs::MNOC_MAX_PACKET {
                    self.recv_error = true;
                    self.incoming_size = None;
                } else {
                    self.recv_error = false;
                    self.incoming_size = Some(size);
                    self.incoming.clear();
                }
            }
            return Some(MnocEvent::None);
        }
        if offset == regs::mnoc_recv_data(p) {
            let Some(size) = self.incoming_size else {
                self.recv_error = true;
                return Some(MnocEvent::None);
            };
            self.incoming.push(value);
            if self.incoming.len() * 4 == size {
                self.incoming_size = None;
                return Some(MnocEvent::Message(std::mem::take(&mut self.incoming)));
            }
            return Some(MnocEvent::None);
        }
        if offset == regs::mnoc_send_info(p) || offset == regs::mnoc_send_data(p) {
            return Some(MnocEvent::None);
        }
        None
    }

    pub fn post_reply(&mut self, reply: &[u32]) {
        self.outgoing = reply.iter().copied().collect();
        self.outgoing_size = (reply.len() * 4) as u32;
    }
}
