//! Bounds-checked ELF64 parsing for fixed-address x86_64 executables.
//!
//! One parser serves two loaders: the `boot/` bridge loads the kernel with it, and the kernel
//! loads user programs with it. [`Elf::parse`] validates everything a loader relies on before
//! it hands out a single byte: the identification, the header sizes, the program header table
//! and every `PT_LOAD` segment's file range lie inside the file, `p_filesz <= p_memsz`,
//! `p_vaddr + p_memsz` does not wrap, alignments are powers of two and congruent, no two
//! segments overlap (nor share a page with different permissions), and the entry point lies in
//! an executable segment. After a successful parse, [`Elf::segments`], [`Elf::entry`] and
//! [`Elf::span`] cannot fail and never index out of bounds.
//!
//! Only `ET_EXEC` is accepted: position-independent executables (`ET_DYN`) are reported as
//! unsupported, since neither loader applies relocations.
//!
//! The crate is `no_std` and allocation-free, so checks that compare segments pairwise bound
//! the number of program headers ([`MAX_PROGRAM_HEADERS`]).

#![cfg_attr(not(test), no_std)]

use core::fmt;

/// The page size the loaders map with; [`Elf::span`] is aligned to it.
pub const PAGE_SIZE: u64 = 4096;

/// The most program headers accepted. Real executables have a handful; the bound keeps the
/// pairwise overlap check cheap on hostile input.
pub const MAX_PROGRAM_HEADERS: usize = 256;

/// `e_machine` for x86_64.
pub const EM_X86_64: u16 = 62;
/// `e_type` of a fixed-address executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a position-independent executable or shared object.
pub const ET_DYN: u16 = 3;
/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;

/// What is wrong with an ELF image, precisely enough to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// The file is shorter than the 64-byte ELF header.
    TruncatedHeader { len: usize },
    /// The first four bytes are not `\x7fELF`.
    BadMagic { found: [u8; 4] },
    /// `EI_CLASS` is not `ELFCLASS64`.
    NotElf64 { class: u8 },
    /// `EI_DATA` is not little-endian.
    NotLittleEndian { data: u8 },
    /// `EI_VERSION` or `e_version` is not 1 (`EV_CURRENT`).
    BadVersion { version: u32 },
    /// `e_machine` is not x86_64.
    WrongMachine { machine: u16 },
    /// `e_type` is `ET_DYN`: position-independent executables are not supported.
    PositionIndependent,
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    NotExecutable { elf_type: u16 },
    /// `e_ehsize` is smaller than the ELF64 header.
    BadHeaderSize { ehsize: u16 },
    /// `e_phentsize` is smaller than an ELF64 program header.
    BadProgramHeaderSize { phentsize: u16 },
    /// More program headers than [`MAX_PROGRAM_HEADERS`].
    TooManyProgramHeaders { count: usize },
    /// The program header table does not lie inside the file.
    ProgramHeadersOutOfBounds {
        offset: u64,
        size: u64,
        file_len: usize,
    },
    /// A `PT_LOAD` segment's file bytes do not lie inside the file.
    SegmentOutOfBounds {
        index: usize,
        offset: u64,
        filesz: u64,
        file_len: usize,
    },
    /// A `PT_LOAD` segment has more file bytes than memory bytes.
    FileSizeExceedsMemSize {
        index: usize,
        filesz: u64,
        memsz: u64,
    },
    /// A `PT_LOAD` segment's end (`p_vaddr + p_memsz`, rounded to a page) wraps around.
    AddressOverflow {
        index: usize,
        vaddr: u64,
        memsz: u64,
    },
    /// A `PT_LOAD` segment's `p_align` is not zero or a power of two.
    BadAlignment { index: usize, align: u64 },
    /// A `PT_LOAD` segment's `p_vaddr` and `p_offset` are not congruent modulo `p_align`.
    MisalignedSegment {
        index: usize,
        vaddr: u64,
        offset: u64,
        align: u64,
    },
    /// Two `PT_LOAD` segments overlap in memory.
    OverlappingSegments { first: usize, second: usize },
    /// Two `PT_LOAD` segments share a page but ask for different permissions.
    ConflictingPagePermissions { first: usize, second: usize },
    /// No `PT_LOAD` segment has a nonzero memory size.
    NoLoadableSegments,
    /// The entry point lies in no executable `PT_LOAD` segment.
    EntryNotExecutable { entry: u64 },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TruncatedHeader { len } => {
                write!(f, "file is {len} bytes, shorter than the {EHDR_SIZE}-byte ELF64 header")
            }
            Self::BadMagic { found } => write!(f, "not an ELF file (magic {found:02x?})"),
            Self::NotElf64 { class } => write!(f, "not a 64-bit ELF file (EI_CLASS {class})"),
            Self::NotLittleEndian { data } => {
                write!(f, "not a little-endian ELF file (EI_DATA {data})")
            }
            Self::BadVersion { version } => write!(f, "unknown ELF version {version}"),
            Self::WrongMachine { machine } => {
                write!(f, "built for machine {machine}, not x86_64 ({EM_X86_64})")
            }
            Self::PositionIndependent => write!(
                f,
                "position-independent executable (ET_DYN) is not supported: link at a fixed address (ET_EXEC)"
            ),
            Self::NotExecutable { elf_type } => {
                write!(f, "ELF type {elf_type} is not an executable (ET_EXEC)")
            }
            Self::BadHeaderSize { ehsize } => {
                write!(f, "e_ehsize {ehsize} is smaller than the {EHDR_SIZE}-byte ELF64 header")
            }
            Self::BadProgramHeaderSize { phentsize } => write!(
                f,
                "e_phentsize {phentsize} is smaller than a {PHDR_SIZE}-byte ELF64 program header"
            ),
            Self::TooManyProgramHeaders { count } => {
                write!(f, "{count} program headers, more than the {MAX_PROGRAM_HEADERS} accepted")
            }
            Self::ProgramHeadersOutOfBounds { offset, size, file_len } => write!(
                f,
                "program header table ({size} bytes at offset {offset:#x}) extends past the end of the {file_len}-byte file"
            ),
            Self::SegmentOutOfBounds { index, offset, filesz, file_len } => write!(
                f,
                "segment {index}: file bytes [{offset:#x}, +{filesz:#x}) extend past the end of the {file_len}-byte file"
            ),
            Self::FileSizeExceedsMemSize { index, filesz, memsz } => write!(
                f,
                "segment {index}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}"
            ),
            Self::AddressOverflow { index, vaddr, memsz } => write!(
                f,
                "segment {index}: p_vaddr {vaddr:#x} + p_memsz {memsz:#x} wraps around the address space"
            ),
            Self::BadAlignment { index, align } => {
                write!(f, "segment {index}: p_align {align:#x} is not a power of two")
            }
            Self::MisalignedSegment { index, vaddr, offset, align } => write!(
                f,
                "segment {index}: p_vaddr {vaddr:#x} and p_offset {offset:#x} differ modulo p_align {align:#x}"
            ),
            Self::OverlappingSegments { first, second } => {
                write!(f, "segments {first} and {second} overlap in memory")
            }
            Self::ConflictingPagePermissions { first, second } => write!(
                f,
                "segments {first} and {second} share a page but have different permissions"
            ),
            Self::NoLoadableSegments => write!(f, "no loadable (PT_LOAD) segment"),
            Self::EntryNotExecutable { entry } => {
                write!(f, "entry point {entry:#x} is not inside an executable segment")
            }
        }
    }
}

/// Permissions of a loadable segment (`p_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFlags(u32);

impl SegmentFlags {
    pub const EXECUTE: Self = Self(1);
    pub const WRITE: Self = Self(2);
    pub const READ: Self = Self(4);

    pub const fn from_bits(bits: u32) -> Self {
        Self(bits & 7)
    }
    pub const fn bits(self) -> u32 {
        self.0
    }
    pub const fn readable(self) -> bool {
        self.0 & Self::READ.0 != 0
    }
    pub const fn writable(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }
    pub const fn executable(self) -> bool {
        self.0 & Self::EXECUTE.0 != 0
    }
}

/// One loadable segment: `memsz` bytes at `vaddr`, the first `data.len()` of them from the file,
/// the rest zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Index of the program header this segment comes from.
    pub index: usize,
    pub vaddr: u64,
    pub memsz: u64,
    /// The segment's file bytes (`p_filesz` of them).
    pub data: &'a [u8],
    pub flags: SegmentFlags,
    /// `p_align` (0 or 1 mean unaligned).
    pub align: u64,
}

impl Segment<'_> {
    /// One past the segment's last byte in memory (cannot overflow after a successful parse).
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }
}

/// A page-aligned virtual address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, Copy)]
struct RawPhdr {
    p_type: u32,
    p_flags: u32,
    p_offset: u64,
    p_vaddr: u64,
    p_filesz: u64,
    p_memsz: u64,
    p_align: u64,
}

impl RawPhdr {
    fn is_load(&self) -> bool {
        self.p_type == PT_LOAD && self.p_memsz != 0
    }
}

/// A validated ELF64 x86_64 executable borrowed from its file bytes.
#[derive(Debug, Clone, Copy)]
pub struct Elf<'a> {
    data: &'a [u8],
    entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
    span: Span,
    min_vaddr: u64,
    max_align: u64,
}

fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

fn page_floor(addr: u64) -> u64 {
    addr & !(PAGE_SIZE - 1)
}

/// Rounds up to a page; `None` if that wraps.
fn page_ceil(addr: u64) -> Option<u64> {
    addr.checked_add(PAGE_SIZE - 1).map(page_floor)
}

impl<'a> Elf<'a> {
    /// Validates `data` as an x86_64 `ET_EXEC` ELF64 image (see the crate documentation for the
    /// full list of checks).
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < EHDR_SIZE {
            return Err(ElfError::TruncatedHeader { len: data.len() });
        }
        let magic = [data[0], data[1], data[2], data[3]];
        if magic != ELF_MAGIC {
            return Err(ElfError::BadMagic { found: magic });
        }
        if data[4] != ELFCLASS64 {
            return Err(ElfError::NotElf64 { class: data[4] });
        }
        if data[5] != ELFDATA2LSB {
            return Err(ElfError::NotLittleEndian { data: data[5] });
        }
        if data[6] != EV_CURRENT {
            return Err(ElfError::BadVersion {
                version: data[6].into(),
            });
        }
        let elf_type = read_u16(data, 16);
        let machine = read_u16(data, 18);
        let version = read_u32(data, 20);
        let entry = read_u64(data, 24);
        let phoff = read_u64(data, 32);
        let ehsize = read_u16(data, 52);
        let phentsize = read_u16(data, 54);
        let phnum = usize::from(read_u16(data, 56));

        if machine != EM_X86_64 {
            return Err(ElfError::WrongMachine { machine });
        }
        match elf_type {
            ET_EXEC => {}
            ET_DYN => return Err(ElfError::PositionIndependent),
            other => return Err(ElfError::NotExecutable { elf_type: other }),
        }
        if version != u32::from(EV_CURRENT) {
            return Err(ElfError::BadVersion { version });
        }
        if usize::from(ehsize) < EHDR_SIZE {
            return Err(ElfError::BadHeaderSize { ehsize });
        }
        if usize::from(phentsize) < PHDR_SIZE {
            return Err(ElfError::BadProgramHeaderSize { phentsize });
        }
        if phnum > MAX_PROGRAM_HEADERS {
            return Err(ElfError::TooManyProgramHeaders { count: phnum });
        }
        let table_size = phnum as u64 * u64::from(phentsize);
        let table_fits = phoff
            .checked_add(table_size)
            .is_some_and(|end| end <= data.len() as u64);
        if !table_fits {
            return Err(ElfError::ProgramHeadersOutOfBounds {
                offset: phoff,
                size: table_size,
                file_len: data.len(),
            });
        }

        let mut elf = Elf {
            data,
            entry,
            phoff: phoff as usize,
            phentsize: phentsize.into(),
            phnum,
            span: Span { start: 0, end: 0 },
            min_vaddr: 0,
            max_align: 1,
        };

        let mut min_vaddr = u64::MAX;
        let mut max_end = 0;
        for index in 0..phnum {
            let ph = elf.phdr(index);
            if !ph.is_load() {
                continue;
            }
            Self::check_segment(index, &ph, data.len())?;
            min_vaddr = min_vaddr.min(ph.p_vaddr);
            max_end = max_end.max(ph.p_vaddr + ph.p_memsz);
            elf.max_align = elf.max_align.max(ph.p_align);
        }
        if min_vaddr == u64::MAX {
            return Err(ElfError::NoLoadableSegments);
        }
        elf.check_pairs()?;

        let executable_entry = elf
            .segments()
            .any(|s| s.flags.executable() && s.vaddr <= entry && entry < s.end());
        if !executable_entry {
            return Err(ElfError::EntryNotExecutable { entry });
        }

        // check_segment proved every segment's page-rounded end is representable.
        elf.min_vaddr = min_vaddr;
        elf.span = Span {
            start: page_floor(min_vaddr),
            end: page_ceil(max_end).unwrap_or(u64::MAX),
        };
        Ok(elf)
    }

    fn check_segment(index: usize, ph: &RawPhdr, file_len: usize) -> Result<(), ElfError> {
        let in_file = ph
            .p_offset
            .checked_add(ph.p_filesz)
            .is_some_and(|end| end <= file_len as u64);
        if !in_file {
            return Err(ElfError::SegmentOutOfBounds {
                index,
                offset: ph.p_offset,
                filesz: ph.p_filesz,
                file_len,
            });
        }
        if ph.p_filesz > ph.p_memsz {
            return Err(ElfError::FileSizeExceedsMemSize {
                index,
                filesz: ph.p_filesz,
                memsz: ph.p_memsz,
            });
        }
        let end = ph.p_vaddr.checked_add(ph.p_memsz).and_then(page_ceil);
        if end.is_none() {
            return Err(ElfError::AddressOverflow {
                index,
                vaddr: ph.p_vaddr,
                memsz: ph.p_memsz,
            });
        }
        if ph.p_align > 1 {
            if !ph.p_align.is_power_of_two() {
                return Err(ElfError::BadAlignment {
                    index,
                    align: ph.p_align,
                });
            }
            if ph.p_vaddr % ph.p_align != ph.p_offset % ph.p_align {
                return Err(ElfError::MisalignedSegment {
                    index,
                    vaddr: ph.p_vaddr,
                    offset: ph.p_offset,
                    align: ph.p_align,
                });
            }
        }
        Ok(())
    }

    /// Rejects segments that overlap, and segments that share a page with different
    /// permissions (a page has one set of permissions).
    fn check_pairs(&self) -> Result<(), ElfError> {
        for a in self.segments() {
            for b in self.segments().filter(|b| b.index > a.index) {
                if a.vaddr < b.end() && b.vaddr < a.end() {
                    return Err(ElfError::OverlappingSegments {
                        first: a.index,
                        second: b.index,
                    });
                }
                let a_pages = (page_floor(a.vaddr), page_ceil(a.end()).unwrap_or(u64::MAX));
                let b_pages = (page_floor(b.vaddr), page_ceil(b.end()).unwrap_or(u64::MAX));
                if a_pages.0 < b_pages.1 && b_pages.0 < a_pages.1 && a.flags != b.flags {
                    return Err(ElfError::ConflictingPagePermissions {
                        first: a.index,
                        second: b.index,
                    });
                }
            }
        }
        Ok(())
    }

    fn phdr(&self, index: usize) -> RawPhdr {
        let at = self.phoff + index * self.phentsize;
        let d = self.data;
        RawPhdr {
            p_type: read_u32(d, at),
            p_flags: read_u32(d, at + 4),
            p_offset: read_u64(d, at + 8),
            p_vaddr: read_u64(d, at + 16),
            p_filesz: read_u64(d, at + 32),
            p_memsz: read_u64(d, at + 40),
            p_align: read_u64(d, at + 48),
        }
    }

    /// The entry point (inside an executable segment).
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments (`PT_LOAD` with a nonzero memory size), in file order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'a>> + '_ {
        let data = self.data;
        (0..self.phnum).filter_map(move |index| {
            let ph = self.phdr(index);
            if !ph.is_load() {
                return None;
            }
            let start = ph.p_offset as usize;
            Some(Segment {
                index,
                vaddr: ph.p_vaddr,
                memsz: ph.p_memsz,
                data: data.get(start..start + ph.p_filesz as usize)?,
                flags: SegmentFlags::from_bits(ph.p_flags),
                align: ph.p_align,
            })
        })
    }

    /// The page-aligned range covering every loadable segment.
    pub fn span(&self) -> Span {
        self.span
    }

    /// The lowest loadable virtual address (not rounded).
    pub fn min_vaddr(&self) -> u64 {
        self.min_vaddr
    }

    /// The largest `p_align` of the loadable segments (at least 1).
    pub fn max_align(&self) -> u64 {
        self.max_align
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }
}

#[cfg(test)]
mod tests;
