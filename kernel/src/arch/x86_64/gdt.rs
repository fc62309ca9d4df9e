//! The GDT, one per CPU inside its entry area.
//!
//! The order is fixed by SYSCALL/SYSRET (SDM Vol. 2B, SYSRET): SYSRET to 64-bit mode loads
//! CS = STAR[63:48] + 16 and SS = STAR[63:48] + 8, so user data must sit directly below user
//! code, with a 32-bit user code slot below both.

use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::PrivilegeLevel::{Ring0, Ring3};

use super::tss::TssPage;

pub const KERNEL_CS: SegmentSelector = SegmentSelector::new(1, Ring0);
pub const KERNEL_SS: SegmentSelector = SegmentSelector::new(2, Ring0);
pub const USER32_CS: SegmentSelector = SegmentSelector::new(3, Ring3);
pub const USER_SS: SegmentSelector = SegmentSelector::new(4, Ring3);
pub const USER_CS: SegmentSelector = SegmentSelector::new(5, Ring3);
pub const TSS: SegmentSelector = SegmentSelector::new(6, Ring0);

pub type Gdt = GlobalDescriptorTable<8>;

/// A 32-bit ring-3 code segment: present, DPL 3, code, readable, 4 GiB, D=1. Never used to run
/// code here; it only holds the slot SYSRET's layout requires.
const USER32_CODE: u64 = 0x00cf_fa00_0000_ffff;

/// Builds the GDT for a CPU whose TSS is `tss` (both in that CPU's entry area).
pub fn build(tss: &'static TssPage) -> Gdt {
    let mut gdt = Gdt::empty();
    let sel = [
        gdt.append(Descriptor::kernel_code_segment()),
        gdt.append(Descriptor::kernel_data_segment()),
        gdt.append(Descriptor::UserSegment(USER32_CODE)),
        gdt.append(Descriptor::user_data_segment()),
        gdt.append(Descriptor::user_code_segment()),
        gdt.append(
            Descriptor::tss_segment_with_iomap(&tss.tss, &tss.io_bitmap).expect("TSS I/O bitmap layout"),
        ),
    ];
    assert_eq!(sel, [KERNEL_CS, KERNEL_SS, USER32_CS, USER_SS, USER_CS, TSS]);
    gdt
}
