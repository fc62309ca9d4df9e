//! Host tests: a valid image built here, then one malformed input per hazard.

use super::*;

const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

impl Phdr {
    fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Self {
        Phdr {
            p_type: PT_LOAD,
            flags,
            offset,
            vaddr,
            filesz,
            memsz,
            align: PAGE_SIZE,
        }
    }
}

/// Builds an ELF64 image: header, program headers at offset 64, file size `len`.
struct Image {
    e_type: u16,
    machine: u16,
    entry: u64,
    phentsize: u16,
    phdrs: Vec<Phdr>,
    len: usize,
}

impl Image {
    /// A kernel-like image: text (R-X) at the base, rodata (R--), data+bss (RW-).
    fn kernel() -> Self {
        Image {
            e_type: ET_EXEC,
            machine: EM_X86_64,
            entry: KERNEL_BASE + 0x10,
            phentsize: PHDR_SIZE as u16,
            phdrs: vec![
                Phdr::load(5, 0x1000, KERNEL_BASE, 0x1000, 0x1000),
                Phdr::load(4, 0x2000, KERNEL_BASE + 0x1000, 0x800, 0x800),
                Phdr::load(6, 0x3000, KERNEL_BASE + 0x2000, 0x100, 0x3000),
            ],
            len: 0x3100,
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut d = vec![0u8; self.len];
        d[0..4].copy_from_slice(&ELF_MAGIC);
        d[4] = ELFCLASS64;
        d[5] = ELFDATA2LSB;
        d[6] = EV_CURRENT;
        d[16..18].copy_from_slice(&self.e_type.to_le_bytes());
        d[18..20].copy_from_slice(&self.machine.to_le_bytes());
        d[20..24].copy_from_slice(&1u32.to_le_bytes());
        d[24..32].copy_from_slice(&self.entry.to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        d[54..56].copy_from_slice(&self.phentsize.to_le_bytes());
        d[56..58].copy_from_slice(&(self.phdrs.len() as u16).to_le_bytes());
        for (i, p) in self.phdrs.iter().enumerate() {
            let at = 64 + i * usize::from(self.phentsize);
            let mut put = |off: usize, bytes: &[u8]| {
                if at + off + bytes.len() <= d.len() {
                    d[at + off..at + off + bytes.len()].copy_from_slice(bytes)
                }
            };
            put(0, &p.p_type.to_le_bytes());
            put(4, &p.flags.to_le_bytes());
            put(8, &p.offset.to_le_bytes());
            put(16, &p.vaddr.to_le_bytes());
            put(24, &p.vaddr.to_le_bytes());
            put(32, &p.filesz.to_le_bytes());
            put(40, &p.memsz.to_le_bytes());
            put(48, &p.align.to_le_bytes());
        }
        // Recognisable segment contents.
        for p in &self.phdrs {
            let start = p.offset as usize;
            let end = p.offset.saturating_add(p.filesz).min(d.len() as u64) as usize;
            if start < end {
                d[start..end].fill(p.flags as u8 + 0xa0);
            }
        }
        d
    }
}

fn parse(image: &Image) -> Result<(), ElfError> {
    let bytes = image.build();
    Elf::parse(&bytes).map(|_| ())
}

#[test]
fn valid_kernel_image_parses_with_its_segments_entry_and_span() {
    let bytes = Image::kernel().build();
    let elf = Elf::parse(&bytes).expect("valid image");
    assert_eq!(elf.entry(), KERNEL_BASE + 0x10);
    assert_eq!(
        elf.span(),
        Span {
            start: KERNEL_BASE,
            end: KERNEL_BASE + 0x5000
        }
    );
    assert_eq!(elf.min_vaddr(), KERNEL_BASE);
    assert_eq!(elf.max_align(), PAGE_SIZE);

    let segments: Vec<_> = elf.segments().collect();
    assert_eq!(segments.len(), 3);
    let text = segments[0];
    assert!(text.flags.readable() && text.flags.executable() && !text.flags.writable());
    assert_eq!(text.data.len(), 0x1000);
    assert!(text.data.iter().all(|&b| b == 0xa5));
    let data = segments[2];
    assert!(data.flags.writable() && !data.flags.executable());
    assert_eq!(
        (data.vaddr, data.memsz, data.data.len()),
        (KERNEL_BASE + 0x2000, 0x3000, 0x100)
    );
}

#[test]
fn non_load_and_empty_segments_are_skipped_not_loaded() {
    let mut image = Image::kernel();
    // PT_NOTE pointing far outside the file: not loaded, so not checked.
    image.phdrs.push(Phdr {
        p_type: 4,
        flags: 4,
        offset: 1 << 40,
        vaddr: 0,
        filesz: 8,
        memsz: 8,
        align: 4,
    });
    // PT_LOAD with memsz 0 overlapping the text: ignored, as loaders do.
    image.phdrs.push(Phdr::load(6, 0, KERNEL_BASE, 0, 0));
    let bytes = image.build();
    let elf = Elf::parse(&bytes).expect("valid image");
    assert_eq!(elf.segments().count(), 3);
}

#[test]
fn unaligned_span_is_rounded_out_to_pages() {
    let mut image = Image::kernel();
    image.phdrs = vec![Phdr::load(5, 0x1010, KERNEL_BASE + 0x10, 0x20, 0x1ff0)];
    image.entry = KERNEL_BASE + 0x10;
    let bytes = image.build();
    let elf = Elf::parse(&bytes).unwrap();
    assert_eq!(
        elf.span(),
        Span {
            start: KERNEL_BASE,
            end: KERNEL_BASE + 0x2000
        }
    );
    assert_eq!(elf.min_vaddr(), KERNEL_BASE + 0x10);
}

#[test]
fn truncated_header_is_rejected() {
    let bytes = Image::kernel().build();
    assert!(matches!(
        Elf::parse(&bytes[..63]),
        Err(ElfError::TruncatedHeader { len: 63 })
    ));
    assert!(matches!(
        Elf::parse(&[]),
        Err(ElfError::TruncatedHeader { len: 0 })
    ));
}

#[test]
fn bad_magic_is_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[1] = b'X';
    assert!(matches!(Elf::parse(&bytes), Err(ElfError::BadMagic { .. })));
}

#[test]
fn elf32_class_is_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[4] = 1;
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::NotElf64 { class: 1 })
    ));
}

#[test]
fn big_endian_is_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[5] = 2;
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::NotLittleEndian { data: 2 })
    ));
}

#[test]
fn unknown_version_is_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[20] = 2;
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::BadVersion { version: 2 })
    ));
    let mut bytes = Image::kernel().build();
    bytes[6] = 0;
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::BadVersion { version: 0 })
    ));
}

#[test]
fn wrong_machine_is_rejected() {
    let mut image = Image::kernel();
    image.machine = 183; // aarch64
    assert_eq!(parse(&image), Err(ElfError::WrongMachine { machine: 183 }));
}

#[test]
fn position_independent_executable_is_reported_as_unsupported() {
    let mut image = Image::kernel();
    image.e_type = ET_DYN;
    assert_eq!(parse(&image), Err(ElfError::PositionIndependent));
    let message = ElfError::PositionIndependent.to_string();
    assert!(
        message.contains("ET_DYN") && message.contains("not supported"),
        "{message}"
    );
}

#[test]
fn relocatable_object_is_not_an_executable() {
    let mut image = Image::kernel();
    image.e_type = 1; // ET_REL
    assert_eq!(parse(&image), Err(ElfError::NotExecutable { elf_type: 1 }));
}

#[test]
fn short_header_size_fields_are_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[52] = 32;
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::BadHeaderSize { ehsize: 32 })
    ));
    let mut image = Image::kernel();
    image.phentsize = 32;
    assert_eq!(
        parse(&image),
        Err(ElfError::BadProgramHeaderSize { phentsize: 32 })
    );
}

#[test]
fn larger_program_header_entries_are_accepted() {
    let mut image = Image::kernel();
    image.phentsize = 64;
    assert_eq!(parse(&image), Ok(()));
}

#[test]
fn program_header_table_past_end_of_file_is_rejected() {
    let mut bytes = Image::kernel().build();
    let near_end = bytes.len() as u64 - 100;
    bytes[32..40].copy_from_slice(&near_end.to_le_bytes());
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::ProgramHeadersOutOfBounds { .. })
    ));
}

#[test]
fn program_header_offset_overflow_is_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[32..40].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::ProgramHeadersOutOfBounds { .. })
    ));
}

#[test]
fn too_many_program_headers_are_rejected() {
    let mut bytes = Image::kernel().build();
    bytes[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(matches!(
        Elf::parse(&bytes),
        Err(ElfError::TooManyProgramHeaders { count: 0xffff })
    ));
}

#[test]
fn segment_past_end_of_file_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs[1].filesz = 0x2000; // rodata runs off the 0x3100-byte file
    image.phdrs[1].memsz = 0x2000;
    image.phdrs[2].vaddr = KERNEL_BASE + 0x3000;
    assert!(matches!(
        parse(&image),
        Err(ElfError::SegmentOutOfBounds { index: 1, .. })
    ));
}

#[test]
fn segment_offset_overflow_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs[0].offset = u64::MAX - 0x10;
    image.phdrs[0].align = 0;
    assert!(matches!(
        parse(&image),
        Err(ElfError::SegmentOutOfBounds { index: 0, .. })
    ));
}

#[test]
fn file_size_larger_than_memory_size_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs[2].filesz = 0x100;
    image.phdrs[2].memsz = 0x80;
    assert_eq!(
        parse(&image),
        Err(ElfError::FileSizeExceedsMemSize {
            index: 2,
            filesz: 0x100,
            memsz: 0x80
        })
    );
}

#[test]
fn wrapping_virtual_address_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs[2].vaddr = u64::MAX - 0xfff;
    image.phdrs[2].offset = 0x3000;
    assert!(matches!(
        parse(&image),
        Err(ElfError::AddressOverflow { index: 2, .. })
    ));
}

#[test]
fn segment_ending_in_last_partial_page_is_rejected_because_its_page_wraps() {
    let mut image = Image::kernel();
    image.phdrs[2].vaddr = u64::MAX - 0x3fff;
    image.phdrs[2].memsz = 0x3001; // ends at u64::MAX - 0xffe: its page end wraps
    image.phdrs[2].offset = 0x3000;
    assert!(matches!(
        parse(&image),
        Err(ElfError::AddressOverflow { index: 2, .. })
    ));
}

#[test]
fn non_power_of_two_alignment_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs[1].align = 0x3000;
    assert_eq!(
        parse(&image),
        Err(ElfError::BadAlignment {
            index: 1,
            align: 0x3000
        })
    );
}

#[test]
fn vaddr_and_offset_disagreeing_modulo_alignment_are_rejected() {
    let mut image = Image::kernel();
    image.phdrs[1].offset = 0x2010;
    assert!(matches!(
        parse(&image),
        Err(ElfError::MisalignedSegment { index: 1, .. })
    ));
}

#[test]
fn overlapping_segments_are_rejected() {
    let mut image = Image::kernel();
    image.phdrs[1].vaddr = KERNEL_BASE + 0x800;
    image.phdrs[1].offset = 0x1800;
    image.phdrs[1].align = 0x800;
    assert_eq!(
        parse(&image),
        Err(ElfError::OverlappingSegments {
            first: 0,
            second: 1
        })
    );
}

#[test]
fn segment_contained_in_another_is_an_overlap() {
    let mut image = Image::kernel();
    image.phdrs[2].vaddr = KERNEL_BASE;
    image.phdrs[2].memsz = 0x10000;
    image.phdrs[2].offset = 0x3000;
    image.phdrs[2].flags = 5;
    image.phdrs[1].vaddr = KERNEL_BASE + 0x20000;
    image.phdrs[1].offset = 0x2000;
    assert!(matches!(
        parse(&image),
        Err(ElfError::OverlappingSegments {
            first: 0,
            second: 2
        })
    ));
}

#[test]
fn segments_sharing_a_page_with_different_permissions_are_rejected() {
    let mut image = Image::kernel();
    // rodata (R--) ends at +0x1800, data (RW-) starts in the same page.
    image.phdrs[2].vaddr = KERNEL_BASE + 0x1800;
    image.phdrs[2].offset = 0x2800;
    assert_eq!(
        parse(&image),
        Err(ElfError::ConflictingPagePermissions {
            first: 1,
            second: 2
        })
    );
}

#[test]
fn segments_sharing_a_page_with_equal_permissions_are_accepted() {
    let mut image = Image::kernel();
    image.phdrs[2].flags = 4;
    image.phdrs[2].vaddr = KERNEL_BASE + 0x1800;
    image.phdrs[2].offset = 0x2800;
    assert_eq!(parse(&image), Ok(()));
}

#[test]
fn image_without_loadable_segments_is_rejected() {
    let mut image = Image::kernel();
    image.phdrs.clear();
    assert_eq!(parse(&image), Err(ElfError::NoLoadableSegments));
    let mut image = Image::kernel();
    for p in &mut image.phdrs {
        p.p_type = 6; // PT_PHDR
    }
    assert_eq!(parse(&image), Err(ElfError::NoLoadableSegments));
}

#[test]
fn entry_outside_every_segment_is_rejected() {
    let mut image = Image::kernel();
    image.entry = KERNEL_BASE + 0x100000;
    assert_eq!(
        parse(&image),
        Err(ElfError::EntryNotExecutable {
            entry: KERNEL_BASE + 0x100000
        })
    );
}

#[test]
fn entry_in_non_executable_segment_is_rejected() {
    let mut image = Image::kernel();
    image.entry = KERNEL_BASE + 0x2010; // data
    assert_eq!(
        parse(&image),
        Err(ElfError::EntryNotExecutable {
            entry: KERNEL_BASE + 0x2010
        })
    );
}

#[test]
fn entry_at_end_of_executable_segment_is_outside_it() {
    let mut image = Image::kernel();
    image.entry = KERNEL_BASE + 0x1000; // one past the text
    assert!(matches!(
        parse(&image),
        Err(ElfError::EntryNotExecutable { .. })
    ));
}

#[test]
fn every_error_displays_a_specific_message() {
    let errors = [
        ElfError::TruncatedHeader { len: 3 },
        ElfError::BadMagic {
            found: *b"MZ\x90\0",
        },
        ElfError::NotElf64 { class: 1 },
        ElfError::NotLittleEndian { data: 2 },
        ElfError::BadVersion { version: 9 },
        ElfError::WrongMachine { machine: 3 },
        ElfError::PositionIndependent,
        ElfError::NotExecutable { elf_type: 1 },
        ElfError::BadHeaderSize { ehsize: 1 },
        ElfError::BadProgramHeaderSize { phentsize: 1 },
        ElfError::TooManyProgramHeaders { count: 999 },
        ElfError::ProgramHeadersOutOfBounds {
            offset: 1,
            size: 2,
            file_len: 3,
        },
        ElfError::SegmentOutOfBounds {
            index: 1,
            offset: 2,
            filesz: 3,
            file_len: 4,
        },
        ElfError::FileSizeExceedsMemSize {
            index: 1,
            filesz: 2,
            memsz: 1,
        },
        ElfError::AddressOverflow {
            index: 1,
            vaddr: 2,
            memsz: 3,
        },
        ElfError::BadAlignment { index: 1, align: 3 },
        ElfError::MisalignedSegment {
            index: 1,
            vaddr: 2,
            offset: 3,
            align: 4,
        },
        ElfError::OverlappingSegments {
            first: 1,
            second: 2,
        },
        ElfError::ConflictingPagePermissions {
            first: 1,
            second: 2,
        },
        ElfError::NoLoadableSegments,
        ElfError::EntryNotExecutable { entry: 0x1234 },
    ];
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for (i, m) in messages.iter().enumerate() {
        assert!(!m.is_empty());
        assert!(!messages[..i].contains(m), "duplicate message {m}");
    }
    assert!(messages[20].contains("0x1234"));
}
