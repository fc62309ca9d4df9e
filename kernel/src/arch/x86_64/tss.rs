//! The TSS and its I/O-permission bitmap, which live inside each CPU's entry area.

use x86_64::structures::tss::TaskStateSegment;

/// Bytes of the I/O bitmap: one bit per port, 65536 ports (SDM Vol. 1 §19.5.2).
pub const IO_BITMAP_BYTES: usize = 65536 / 8;

/// The TSS followed directly by the I/O bitmap and the terminating all-ones byte the CPU may
/// read past the last port (SDM Vol. 1 §19.5.2).
#[repr(C, align(4096))]
pub struct TssPage {
    pub tss: TaskStateSegment,
    pub io_bitmap: [u8; IO_BITMAP_BYTES + 1],
}

pub const IO_BITMAP_OFFSET: u16 = core::mem::offset_of!(TssPage, io_bitmap) as u16;

/// IST slots (1-based, as the IDT names them; the TSS array is 0-based).
pub const IST_NMI: u16 = 1;
pub const IST_DB: u16 = 2;
pub const IST_MC: u16 = 3;
pub const IST_DF: u16 = 4;

impl TssPage {
    /// Fills a zeroed TssPage in place: every port denied, the given IST stack tops.
    pub fn init(&mut self, ist_tops: [(u16, u64); 4], rsp0: u64) {
        self.tss = TaskStateSegment::new();
        self.tss.iomap_base = IO_BITMAP_OFFSET;
        self.tss.privilege_stack_table[0] = x86_64::VirtAddr::new(rsp0);
        for (slot, top) in ist_tops {
            self.tss.interrupt_stack_table[(slot - 1) as usize] = x86_64::VirtAddr::new(top);
        }
        self.io_bitmap.fill(0xff);
    }
}
