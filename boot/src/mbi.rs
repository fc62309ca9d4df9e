//! The Multiboot2 boot information (MBI) GRUB hands us in EBX, parsed with every length checked.
//!
//! Layout: Multiboot2 specification 1.6, section 3.6 ("Boot information format"): a header of
//! `total_size: u32, reserved: u32`, then 8-byte aligned tags `type: u32, size: u32, body`,
//! ending with a tag of type 0 and size 8.

use core::fmt;

pub const TAG_END: u32 = 0;
pub const TAG_CMDLINE: u32 = 1;
pub const TAG_BOOTLOADER_NAME: u32 = 2;
pub const TAG_MODULE: u32 = 3;
pub const TAG_BOOTDEV: u32 = 5;
pub const TAG_MMAP: u32 = 6;
pub const TAG_ACPI_OLD: u32 = 14;
pub const TAG_ACPI_NEW: u32 = 15;

/// Multiboot2 memory map entry types (specification 3.6.8).
pub const MMAP_AVAILABLE: u32 = 1;
pub const MMAP_ACPI_RECLAIMABLE: u32 = 3;
pub const MMAP_NVS: u32 = 4;
pub const MMAP_BADRAM: u32 = 5;

const HEADER_SIZE: usize = 8;
const TAG_HEADER_SIZE: usize = 8;
const MMAP_ENTRY_MIN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MbiError {
    /// Fewer bytes than the MBI header plus an end tag.
    TooSmall { total_size: usize },
    /// `total_size` claims more bytes than were provided.
    SizeMismatch { total_size: usize, available: usize },
    /// A tag's size is below 8 or runs past `total_size`.
    BadTag { offset: usize, size: usize },
    /// The tags end without an end tag.
    MissingEnd,
    /// A module tag is shorter than its fixed fields or has `mod_end < mod_start`.
    BadModule { offset: usize },
    /// The memory map tag's entry size is too small.
    BadMemoryMap { entry_size: usize },
}

impl fmt::Display for MbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooSmall { total_size } => {
                write!(f, "boot information is {total_size} bytes, too small")
            }
            Self::SizeMismatch {
                total_size,
                available,
            } => write!(
                f,
                "boot information claims {total_size} bytes but only {available} are readable"
            ),
            Self::BadTag { offset, size } => {
                write!(
                    f,
                    "boot information tag at offset {offset} has bad size {size}"
                )
            }
            Self::MissingEnd => write!(f, "boot information has no end tag"),
            Self::BadModule { offset } => {
                write!(f, "module tag at offset {offset} is malformed")
            }
            Self::BadMemoryMap { entry_size } => {
                write!(f, "memory map entry size {entry_size} is too small")
            }
        }
    }
}

/// One tag: its type, its offset from the start of the MBI, and its body (after the 8-byte
/// tag header).
#[derive(Debug, Clone, Copy)]
pub struct Tag<'a> {
    pub typ: u32,
    pub offset: usize,
    pub body: &'a [u8],
}

/// A firmware memory region as GRUB reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub length: u64,
    /// Multiboot2 type (1 available, 3 ACPI reclaimable, 4 NVS, 5 bad, else reserved).
    pub typ: u32,
}

/// A module GRUB loaded: physical `[start, end)` and its command-line string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module<'a> {
    pub start: u32,
    pub end: u32,
    pub string: &'a [u8],
}

/// The BIOS boot device (`biosdev` is the BIOS drive number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDevice {
    pub biosdev: u32,
    pub partition: u32,
    pub sub_partition: u32,
}

/// A copy of the firmware's RSDP inside the MBI.
#[derive(Debug, Clone, Copy)]
pub struct RsdpCopy<'a> {
    /// Offset of the RSDP bytes from the start of the MBI.
    pub offset: usize,
    pub bytes: &'a [u8],
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32_at(bytes, at)?) | (u64::from(u32_at(bytes, at + 4)?) << 32))
}

/// Bytes up to (not including) the first NUL.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..len]
}

/// A validated MBI.
#[derive(Debug, Clone, Copy)]
pub struct Mbi<'a> {
    bytes: &'a [u8],
}

impl<'a> Mbi<'a> {
    /// Validates the tag chain. `bytes` may be longer than `total_size`; only `total_size`
    /// bytes are used.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, MbiError> {
        let total_size = u32_at(bytes, 0).ok_or(MbiError::TooSmall {
            total_size: bytes.len(),
        })? as usize;
        if total_size < HEADER_SIZE + TAG_HEADER_SIZE {
            return Err(MbiError::TooSmall { total_size });
        }
        if total_size > bytes.len() {
            return Err(MbiError::SizeMismatch {
                total_size,
                available: bytes.len(),
            });
        }
        let mbi = Mbi {
            bytes: &bytes[..total_size],
        };
        let mut offset = HEADER_SIZE;
        loop {
            let (typ, size) = match (u32_at(mbi.bytes, offset), u32_at(mbi.bytes, offset + 4)) {
                (Some(t), Some(s)) => (t, s as usize),
                _ => return Err(MbiError::MissingEnd),
            };
            if size < TAG_HEADER_SIZE || offset + size > total_size {
                return Err(MbiError::BadTag { offset, size });
            }
            let body = &mbi.bytes[offset + TAG_HEADER_SIZE..offset + size];
            match typ {
                TAG_END => return Ok(mbi),
                TAG_MODULE => {
                    let start = u32_at(body, 0);
                    let end = u32_at(body, 4);
                    match (start, end) {
                        (Some(s), Some(e)) if e >= s => {}
                        _ => return Err(MbiError::BadModule { offset }),
                    }
                }
                TAG_MMAP => {
                    let entry_size = u32_at(body, 0).unwrap_or(0) as usize;
                    if entry_size < MMAP_ENTRY_MIN {
                        return Err(MbiError::BadMemoryMap { entry_size });
                    }
                }
                _ => {}
            }
            offset = (offset + size + 7) & !7;
        }
    }

    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }

    /// Every tag before the end tag, in order.
    pub fn tags(&self) -> impl Iterator<Item = Tag<'a>> + 'a {
        let bytes = self.bytes;
        let mut offset = HEADER_SIZE;
        core::iter::from_fn(move || {
            let typ = u32_at(bytes, offset)?;
            let size = u32_at(bytes, offset + 4)? as usize;
            if typ == TAG_END || size < TAG_HEADER_SIZE {
                return None;
            }
            let body = bytes.get(offset + TAG_HEADER_SIZE..offset + size)?;
            let tag = Tag { typ, offset, body };
            offset = (offset + size + 7) & !7;
            Some(tag)
        })
    }

    fn tag(&self, typ: u32) -> Option<Tag<'a>> {
        self.tags().find(|t| t.typ == typ)
    }

    pub fn bootloader_name(&self) -> Option<&'a [u8]> {
        self.tag(TAG_BOOTLOADER_NAME).map(|t| c_str(t.body))
    }

    pub fn command_line(&self) -> Option<&'a [u8]> {
        self.tag(TAG_CMDLINE).map(|t| c_str(t.body))
    }

    /// The modules, in the order GRUB loaded them.
    pub fn modules(&self) -> impl Iterator<Item = Module<'a>> + 'a {
        self.tags().filter(|t| t.typ == TAG_MODULE).filter_map(|t| {
            Some(Module {
                start: u32_at(t.body, 0)?,
                end: u32_at(t.body, 4)?,
                string: c_str(t.body.get(8..).unwrap_or(&[])),
            })
        })
    }

    /// The firmware memory map, or `None` if GRUB gave none.
    pub fn memory_map(&self) -> Option<impl Iterator<Item = MemoryRegion> + Clone + 'a> {
        let tag = self.tag(TAG_MMAP)?;
        let entry_size = u32_at(tag.body, 0)? as usize;
        let entries = tag.body.get(8..)?;
        Some(entries.chunks_exact(entry_size).filter_map(|e| {
            Some(MemoryRegion {
                base: u64_at(e, 0)?,
                length: u64_at(e, 8)?,
                typ: u32_at(e, 16)?,
            })
        }))
    }

    pub fn boot_device(&self) -> Option<BootDevice> {
        let t = self.tag(TAG_BOOTDEV)?;
        Some(BootDevice {
            biosdev: u32_at(t.body, 0)?,
            partition: u32_at(t.body, 4)?,
            sub_partition: u32_at(t.body, 8)?,
        })
    }

    /// The RSDP copies: ACPI 2.0+ (tag 15) first, then ACPI 1.0 (tag 14).
    pub fn rsdp_copies(&self) -> impl Iterator<Item = RsdpCopy<'a>> + 'a {
        let new = self.tag(TAG_ACPI_NEW);
        let old = self.tag(TAG_ACPI_OLD);
        new.into_iter().chain(old).map(|t| RsdpCopy {
            offset: t.offset + TAG_HEADER_SIZE,
            bytes: t.body,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds synthetic MBIs tag by tag.
    #[derive(Default)]
    pub struct MbiBuilder {
        tags: Vec<u8>,
    }

    impl MbiBuilder {
        pub fn tag(mut self, typ: u32, body: &[u8]) -> Self {
            self.tags.extend_from_slice(&typ.to_le_bytes());
            self.tags
                .extend_from_slice(&((body.len() + 8) as u32).to_le_bytes());
            self.tags.extend_from_slice(body);
            while !self.tags.len().is_multiple_of(8) {
                self.tags.push(0);
            }
            self
        }
        pub fn module(self, start: u32, end: u32, string: &str) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&start.to_le_bytes());
            body.extend_from_slice(&end.to_le_bytes());
            body.extend_from_slice(string.as_bytes());
            body.push(0);
            self.tag(TAG_MODULE, &body)
        }
        pub fn mmap(self, regions: &[(u64, u64, u32)]) -> Self {
            let mut body = Vec::new();
            body.extend_from_slice(&24u32.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            for &(base, len, typ) in regions {
                body.extend_from_slice(&base.to_le_bytes());
                body.extend_from_slice(&len.to_le_bytes());
                body.extend_from_slice(&typ.to_le_bytes());
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(TAG_MMAP, &body)
        }
        pub fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            let total = 8 + self.tags.len() + 8;
            out.extend_from_slice(&(total as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&self.tags);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&8u32.to_le_bytes());
            out
        }
    }

    fn grub_like() -> Vec<u8> {
        MbiBuilder::default()
            .tag(TAG_CMDLINE, b"\0")
            .tag(TAG_BOOTLOADER_NAME, b"GRUB 2.06\0")
            .module(0x20_0000, 0x21_0000, "kernel boot():/boot/kernel")
            .module(0x21_0000, 0x21_0123, "module boot():/boot/init a b")
            .tag(
                TAG_BOOTDEV,
                &[
                    0xe0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
            )
            .mmap(&[
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0x10_0000, 0xff0_0000, 1),
            ])
            .tag(TAG_ACPI_OLD, b"RSD PTR \x00abcdefghijklmnopq")
            .build()
    }

    #[test]
    fn grub_like_mbi_yields_name_modules_memory_map_and_rsdp() {
        let bytes = grub_like();
        let mbi = Mbi::parse(&bytes).unwrap();
        assert_eq!(mbi.bootloader_name(), Some(&b"GRUB 2.06"[..]));
        assert_eq!(mbi.command_line(), Some(&b""[..]));
        let modules: Vec<_> = mbi.modules().collect();
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].string, b"kernel boot():/boot/kernel");
        assert_eq!((modules[1].start, modules[1].end), (0x21_0000, 0x21_0123));
        let map: Vec<_> = mbi.memory_map().unwrap().collect();
        assert_eq!(
            map[1],
            MemoryRegion {
                base: 0x9fc00,
                length: 0x400,
                typ: 2
            }
        );
        assert_eq!(mbi.boot_device().unwrap().biosdev, 0xe0);
        let rsdp = mbi.rsdp_copies().next().unwrap();
        assert_eq!(&bytes[rsdp.offset..rsdp.offset + 8], b"RSD PTR ");
    }

    #[test]
    fn newer_rsdp_copy_is_preferred() {
        let bytes = MbiBuilder::default()
            .tag(TAG_ACPI_OLD, b"old")
            .tag(TAG_ACPI_NEW, b"new")
            .build();
        let mbi = Mbi::parse(&bytes).unwrap();
        let copies: Vec<_> = mbi.rsdp_copies().map(|c| c.bytes).collect();
        assert_eq!(copies, [&b"new"[..], &b"old"[..]]);
    }

    #[test]
    fn truncated_buffer_is_rejected() {
        let bytes = grub_like();
        assert!(matches!(
            Mbi::parse(&bytes[..bytes.len() - 1]),
            Err(MbiError::SizeMismatch { .. })
        ));
        assert!(matches!(
            Mbi::parse(&bytes[..3]),
            Err(MbiError::TooSmall { .. })
        ));
    }

    #[test]
    fn tag_running_past_total_size_is_rejected() {
        let mut bytes = grub_like();
        bytes[12..16].copy_from_slice(&0x1000u32.to_le_bytes()); // first tag's size
        assert!(matches!(
            Mbi::parse(&bytes),
            Err(MbiError::BadTag { offset: 8, .. })
        ));
    }

    #[test]
    fn zero_sized_tag_cannot_loop_forever() {
        let mut bytes = grub_like();
        bytes[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            Mbi::parse(&bytes),
            Err(MbiError::BadTag { size: 0, .. })
        ));
    }

    #[test]
    fn missing_end_tag_is_rejected() {
        let mut bytes = MbiBuilder::default().tag(TAG_CMDLINE, b"x\0").build();
        let len = bytes.len();
        bytes.truncate(len - 8);
        bytes[0..4].copy_from_slice(&((len - 8) as u32).to_le_bytes());
        assert_eq!(Mbi::parse(&bytes).unwrap_err(), MbiError::MissingEnd);
    }

    #[test]
    fn module_ending_before_it_starts_is_rejected() {
        let bytes = MbiBuilder::default().module(0x2000, 0x1000, "x").build();
        assert!(matches!(
            Mbi::parse(&bytes),
            Err(MbiError::BadModule { .. })
        ));
    }

    #[test]
    fn short_module_tag_is_rejected() {
        let bytes = MbiBuilder::default().tag(TAG_MODULE, &[1, 2, 3]).build();
        assert!(matches!(
            Mbi::parse(&bytes),
            Err(MbiError::BadModule { .. })
        ));
    }

    #[test]
    fn memory_map_with_tiny_entries_is_rejected() {
        let bytes = MbiBuilder::default()
            .tag(TAG_MMAP, &[8, 0, 0, 0, 0, 0, 0, 0])
            .build();
        assert_eq!(
            Mbi::parse(&bytes).unwrap_err(),
            MbiError::BadMemoryMap { entry_size: 8 }
        );
    }

    #[test]
    fn memory_map_with_larger_entries_is_read_by_entry_size() {
        let mut body = Vec::new();
        body.extend_from_slice(&32u32.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        for (base, len) in [(0u64, 0x1000u64), (0x10_0000, 0x2000)] {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&1u32.to_le_bytes());
            body.extend_from_slice(&[0xee; 12]);
        }
        let bytes = MbiBuilder::default().tag(TAG_MMAP, &body).build();
        let mbi = Mbi::parse(&bytes).unwrap();
        let map: Vec<_> = mbi.memory_map().unwrap().collect();
        assert_eq!(map.len(), 2);
        assert_eq!(map[1].base, 0x10_0000);
    }

    #[test]
    fn mbi_without_memory_map_reports_none() {
        let bytes = MbiBuilder::default().build();
        assert!(Mbi::parse(&bytes).unwrap().memory_map().is_none());
    }

    #[test]
    fn unterminated_module_string_is_cut_at_the_tag_end() {
        let mut body = Vec::new();
        body.extend_from_slice(&0x1000u32.to_le_bytes());
        body.extend_from_slice(&0x2000u32.to_le_bytes());
        body.extend_from_slice(b"kernel /k");
        let bytes = MbiBuilder::default().tag(TAG_MODULE, &body).build();
        let mbi = Mbi::parse(&bytes).unwrap();
        assert_eq!(mbi.modules().next().unwrap().string, b"kernel /k");
    }
}
