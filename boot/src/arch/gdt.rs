//! The GDT every CPU uses from the bridge's entry until the kernel loads its own.
//!
//! Its first seven descriptors are the ones PROTOCOL.md requires at hand-off, in that order
//! (null, 16-bit code/data, 32-bit code/data, 64-bit code/data), so the bridge's own 32-bit
//! entry, the AP trampoline and the kernel all use the same table. It lives in the bridge
//! image, which the memory map reports as bootloader-reclaimable.

use core::mem::size_of;

/// A code or data segment descriptor (Intel SDM Vol. 3A, 3.4.5).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Descriptor(u64);

/// Access byte bits.
const PRESENT: u8 = 1 << 7;
const CODE_OR_DATA: u8 = 1 << 4;
const EXECUTABLE: u8 = 1 << 3;
/// Readable for code, writable for data.
const READ_WRITE: u8 = 1 << 1;
/// Set up front so loading a selector never writes to the table.
const ACCESSED: u8 = 1 << 0;

/// Flag nibble bits.
const GRANULARITY_4K: u8 = 1 << 3;
const DEFAULT_32BIT: u8 = 1 << 2;
const LONG_MODE: u8 = 1 << 1;

impl Descriptor {
    const NULL: Self = Self(0);

    const fn new(limit: u32, access: u8, flags: u8) -> Self {
        let limit = limit as u64;
        Self(
            (limit & 0xffff)
                | ((access as u64) << 40)
                | (((limit >> 16) & 0xf) << 48)
                | (((flags & 0xf) as u64) << 52),
        )
    }

    const fn code(limit: u32, flags: u8) -> Self {
        Self::new(
            limit,
            PRESENT | CODE_OR_DATA | EXECUTABLE | READ_WRITE | ACCESSED,
            flags,
        )
    }

    const fn data(limit: u32, flags: u8) -> Self {
        Self::new(limit, PRESENT | CODE_OR_DATA | READ_WRITE | ACCESSED, flags)
    }
}

pub const CODE16: u16 = 0x08;
pub const CODE32: u16 = 0x18;
pub const DATA32: u16 = 0x20;
pub const CODE64: u16 = 0x28;
pub const DATA64: u16 = 0x30;

#[repr(C, align(16))]
pub struct Gdt([Descriptor; 7]);

pub const GDT_LIMIT: u16 = (size_of::<Gdt>() - 1) as u16;

#[used]
#[no_mangle]
pub static BRIDGE_GDT: Gdt = Gdt([
    Descriptor::NULL,
    Descriptor::code(0xffff, 0),
    Descriptor::data(0xffff, 0),
    Descriptor::code(0xfffff, GRANULARITY_4K | DEFAULT_32BIT),
    Descriptor::data(0xfffff, GRANULARITY_4K | DEFAULT_32BIT),
    Descriptor::code(0, LONG_MODE),
    Descriptor::data(0, 0),
]);

const _: () = {
    assert!(CODE16 as usize == size_of::<Descriptor>());
    assert!(CODE32 as usize == 3 * size_of::<Descriptor>());
    assert!(DATA64 as usize == 6 * size_of::<Descriptor>());
    // The values Limine's table has; a typo in a bit constant would show here.
    assert!(BRIDGE_GDT.0[3].0 == 0x00cf_9b00_0000_ffff);
    assert!(BRIDGE_GDT.0[5].0 == 0x0020_9b00_0000_0000);
    assert!(BRIDGE_GDT.0[6].0 == 0x0000_9300_0000_0000);
};

/// The physical (= link) address of the GDT.
pub fn gdt_phys() -> u64 {
    &BRIDGE_GDT as *const Gdt as u64
}
