//! The few ACPI facts the bridge needs, read from byte slices with every length checked:
//! the RSDP (ACPI 6.5, section 5.2.5), the RSDT/XSDT (5.2.7, 5.2.8), and the MADT's processor
//! and I/O APIC entries (5.2.12).

use crate::fixed::FixedVec;

pub const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const RSDP_V1_LEN: usize = 20;
const RSDP_V2_LEN: usize = 36;
pub const SDT_HEADER_LEN: usize = 36;

fn sums_to_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A checked RSDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsdp {
    pub revision: u8,
    pub rsdt: u32,
    /// The XSDT address (revision 2 and later, when nonzero).
    pub xsdt: Option<u64>,
    /// Bytes covered by the checksums (20, or the `length` field).
    pub length: usize,
}

/// Validates an RSDP: signature, the ACPI 1.0 checksum, and for revision 2+ the extended
/// checksum over `length` bytes.
pub fn parse_rsdp(bytes: &[u8]) -> Option<Rsdp> {
    if bytes.get(..8)? != RSDP_SIGNATURE || !sums_to_zero(bytes.get(..RSDP_V1_LEN)?) {
        return None;
    }
    let revision = bytes[15];
    let rsdt = u32_at(bytes, 16)?;
    if revision < 2 {
        return Some(Rsdp {
            revision,
            rsdt,
            xsdt: None,
            length: RSDP_V1_LEN,
        });
    }
    let length = u32_at(bytes, 20)? as usize;
    if length < RSDP_V2_LEN || !sums_to_zero(bytes.get(..length)?) {
        return None;
    }
    let xsdt = u64_at(bytes, 24).filter(|&x| x != 0);
    Some(Rsdp {
        revision,
        rsdt,
        xsdt,
        length,
    })
}

/// Offsets of valid RSDPs in `area`, on 16-byte boundaries (where firmware must put them).
pub fn find_rsdps(area: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..area.len().saturating_sub(RSDP_V1_LEN - 1))
        .step_by(16)
        .filter(move |&at| parse_rsdp(&area[at..]).is_some())
}

/// Picks the RSDP to report among firmware memory areas (`(physical base, bytes)`, searched in
/// order): the first valid one matching GRUB's copy (its first 20 bytes), else the first valid
/// one, else `None` (the caller then falls back to GRUB's copy).
pub fn choose_rsdp(areas: &[(u64, &[u8])], grub_copy: Option<&[u8]>) -> Option<u64> {
    let key = grub_copy.and_then(|c| c.get(..RSDP_V1_LEN));
    let mut first = None;
    for &(base, area) in areas {
        for offset in find_rsdps(area) {
            let found = base + offset as u64;
            if key.is_none_or(|k| area[offset..].starts_with(k)) {
                return Some(found);
            }
            first.get_or_insert(found);
        }
    }
    first
}

/// Whether firmware forbids x2APIC mode through the DMAR table: INTR_REMAP and X2APIC_OPT_OUT
/// both set in its flags (Intel VT-d specification, 8.1).
pub fn dmar_opts_out_of_x2apic(dmar: &Sdt) -> bool {
    const DMAR_FLAGS: usize = SDT_HEADER_LEN + 1;
    dmar.bytes
        .get(DMAR_FLAGS)
        .is_some_and(|flags| flags & 0b11 == 0b11)
}

/// A checked system description table: its signature and whole bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sdt<'a> {
    pub signature: [u8; 4],
    pub bytes: &'a [u8],
}

/// The `length` field of a table header (to know how much to read).
pub fn sdt_length(header: &[u8]) -> Option<usize> {
    (header.len() >= SDT_HEADER_LEN).then(|| u32_at(header, 4).map(|l| l as usize))?
}

/// Validates a table: length within `bytes`, at least a header, checksum zero.
pub fn parse_sdt(bytes: &[u8]) -> Option<Sdt<'_>> {
    let length = sdt_length(bytes)?;
    if length < SDT_HEADER_LEN {
        return None;
    }
    let bytes = bytes.get(..length)?;
    if !sums_to_zero(bytes) {
        return None;
    }
    Some(Sdt {
        signature: bytes[..4].try_into().ok()?,
        bytes,
    })
}

/// The table addresses listed by an RSDT (4-byte entries) or XSDT (8-byte entries).
pub fn root_entries<'a>(root: &Sdt<'a>) -> impl Iterator<Item = u64> + 'a {
    let width = if &root.signature == b"XSDT" { 8 } else { 4 };
    let body = &root.bytes[SDT_HEADER_LEN..];
    body.chunks_exact(width).map(move |c| {
        if width == 8 {
            u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
        } else {
            u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
        }
    })
}

/// One MADT entry of interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadtEntry {
    /// Type 0: processor local APIC.
    LocalApic { uid: u32, apic_id: u32, flags: u32 },
    /// Type 1: I/O APIC.
    IoApic { id: u8, address: u32, gsi_base: u32 },
    /// Type 9: processor local x2APIC.
    X2Apic { uid: u32, apic_id: u32, flags: u32 },
}

const MADT_ENTRIES: usize = SDT_HEADER_LEN + 8;

/// The MADT's entries, stopping at the first malformed one.
pub fn madt_entries<'a>(madt: &Sdt<'a>) -> impl Iterator<Item = MadtEntry> + 'a {
    let bytes = madt.bytes;
    let mut at = MADT_ENTRIES;
    core::iter::from_fn(move || loop {
        let typ = *bytes.get(at)?;
        let len = usize::from(*bytes.get(at + 1)?);
        let entry = bytes.get(at..at + len).filter(|_| len >= 2)?;
        at += len;
        let parsed = match typ {
            0 if len >= 8 => Some(MadtEntry::LocalApic {
                uid: entry[2].into(),
                apic_id: entry[3].into(),
                flags: u32_at(entry, 4)?,
            }),
            1 if len >= 12 => Some(MadtEntry::IoApic {
                id: entry[2],
                address: u32_at(entry, 4)?,
                gsi_base: u32_at(entry, 8)?,
            }),
            9 if len >= 16 => Some(MadtEntry::X2Apic {
                apic_id: u32_at(entry, 4)?,
                flags: u32_at(entry, 8)?,
                uid: u32_at(entry, 12)?,
            }),
            _ => None,
        };
        if parsed.is_some() {
            return parsed;
        }
    })
}

/// A processor the bridge reports (and, unless it is the BSP, starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cpu {
    pub uid: u32,
    pub apic_id: u32,
    pub is_bsp: bool,
}

pub const MAX_CPUS: usize = 1024;

/// The processors to report, in MADT order, as Limine chooses them: local APIC entries, plus
/// local x2APIC entries when x2APIC mode is on; an entry counts if it is enabled or (ACPI 6.3+)
/// online-capable, i.e. `flags` bit 0 XOR bit 1. `bsp_apic_id` marks the BSP.
pub fn cpus(
    entries: impl Iterator<Item = MadtEntry>,
    x2apic: bool,
    bsp_apic_id: u32,
) -> FixedVec<Cpu, MAX_CPUS> {
    let startable = |flags: u32| (flags & 1) ^ ((flags >> 1) & 1) == 1;
    let mut listed: FixedVec<Cpu, MAX_CPUS> = FixedVec::new();
    for e in entries {
        let (uid, apic_id) = match e {
            MadtEntry::LocalApic {
                uid,
                apic_id,
                flags,
            } if startable(flags) => (uid, apic_id),
            MadtEntry::X2Apic {
                uid,
                apic_id,
                flags,
            } if x2apic && startable(flags) => (uid, apic_id),
            _ => continue,
        };
        let cpu = Cpu {
            uid,
            apic_id,
            is_bsp: apic_id == bsp_apic_id,
        };
        if listed.push(cpu).is_err() {
            break;
        }
    }
    // Firmware lists a CPU once; a repeated APIC ID would start one CPU twice. Sorted by
    // (ID, position), a repeat follows its first listing: n log n for a thousand CPUs.
    let mut by_id: FixedVec<(u32, u32), MAX_CPUS> = FixedVec::new();
    for (i, c) in listed.iter().enumerate() {
        let _ = by_id.push((c.apic_id, i as u32));
    }
    by_id.sort_unstable();
    let mut repeated = [false; MAX_CPUS];
    for pair in by_id.windows(2) {
        if pair[0].0 == pair[1].0 {
            repeated[pair[1].1 as usize] = true;
        }
    }
    let mut out = FixedVec::new();
    for (i, c) in listed.iter().enumerate() {
        if !repeated[i] {
            let _ = out.push(*c);
        }
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn fix_checksum(bytes: &mut [u8], at: usize, len: usize) {
        bytes[at] = 0;
        let sum = bytes[..len].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        bytes[at] = 0u8.wrapping_sub(sum);
    }

    pub fn rsdp_v2(xsdt: u64) -> Vec<u8> {
        let mut b = vec![0u8; 36];
        b[..8].copy_from_slice(RSDP_SIGNATURE);
        b[9..15].copy_from_slice(b"BOCHS ");
        b[15] = 2;
        b[16..20].copy_from_slice(&0x7fe_0000u32.to_le_bytes());
        b[20..24].copy_from_slice(&36u32.to_le_bytes());
        b[24..32].copy_from_slice(&xsdt.to_le_bytes());
        fix_checksum(&mut b, 8, 20);
        fix_checksum(&mut b, 32, 36);
        b
    }

    pub fn table(signature: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; SDT_HEADER_LEN];
        b[..4].copy_from_slice(signature);
        b.extend_from_slice(body);
        let len = b.len();
        b[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        fix_checksum(&mut b, 9, len);
        b
    }

    pub fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        body[..4].copy_from_slice(&0xfee0_0000u32.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        table(b"APIC", &body)
    }

    pub fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, uid, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    pub fn x2apic(uid: u32, id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e
    }

    #[test]
    fn valid_rsdp_v2_is_accepted_with_its_xsdt() {
        let r = parse_rsdp(&rsdp_v2(0x7fe_1000)).unwrap();
        assert_eq!(r.revision, 2);
        assert_eq!(r.xsdt, Some(0x7fe_1000));
        assert_eq!(r.length, 36);
    }

    #[test]
    fn rsdp_v1_needs_only_twenty_bytes() {
        let mut b = rsdp_v2(0);
        b[15] = 0;
        fix_checksum(&mut b, 8, 20);
        let r = parse_rsdp(&b[..20]).unwrap();
        assert_eq!((r.revision, r.xsdt, r.length), (0, None, 20));
    }

    #[test]
    fn rsdp_with_bad_checksums_or_signature_is_rejected() {
        let mut b = rsdp_v2(0x1000);
        b[9] ^= 1; // breaks both checksums
        assert!(parse_rsdp(&b).is_none());
        let mut b = rsdp_v2(0x1000);
        b[33] = 1; // breaks only the extended checksum
        assert!(parse_rsdp(&b).is_none());
        let mut b = rsdp_v2(0x1000);
        b[0] = b'X';
        assert!(parse_rsdp(&b).is_none());
    }

    #[test]
    fn rsdp_v2_cut_short_is_rejected() {
        assert!(parse_rsdp(&rsdp_v2(0x1000)[..30]).is_none());
    }

    #[test]
    fn rsdp_search_finds_only_16_byte_aligned_valid_copies() {
        let mut area = vec![0u8; 256];
        let r = rsdp_v2(0x1000);
        area[0x48..0x48 + 36].copy_from_slice(&r); // misaligned: ignored
        area[0xa0..0xa0 + 36].copy_from_slice(&r);
        assert_eq!(find_rsdps(&area).collect::<Vec<_>>(), [0xa0]);
    }

    #[test]
    fn rsdp_matching_grubs_copy_wins_over_an_earlier_one() {
        let mut ebda = vec![0u8; 64];
        let other = rsdp_v2(0x1000);
        ebda[16..16 + 36].copy_from_slice(&other);
        let mut bios = vec![0u8; 128];
        let mut ours = rsdp_v2(0x2000);
        ours[9] = b'Q';
        fix_checksum(&mut ours, 8, 20);
        fix_checksum(&mut ours, 32, 36);
        bios[32..32 + 36].copy_from_slice(&ours);
        let areas: [(u64, &[u8]); 2] = [(0x9fc00, &ebda), (0xe0000, &bios)];
        assert_eq!(choose_rsdp(&areas, Some(&ours)), Some(0xe0020));
        assert_eq!(choose_rsdp(&areas, None), Some(0x9fc10));
        // GRUB's copy matches nothing found: the first valid RSDP still beats the copy.
        assert_eq!(choose_rsdp(&areas, Some(&[0u8; 36])), Some(0x9fc10));
        assert_eq!(choose_rsdp(&[(0xe0000, &[0u8; 64])], Some(&ours)), None);
    }

    #[test]
    fn dmar_opt_out_needs_both_flags() {
        let with = |flags: u8| table(b"DMAR", &[46, flags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for (flags, out) in [(0b00, false), (0b01, false), (0b10, false), (0b11, true)] {
            let t = with(flags);
            assert_eq!(
                dmar_opts_out_of_x2apic(&parse_sdt(&t).unwrap()),
                out,
                "{flags:b}"
            );
        }
    }

    #[test]
    fn tables_with_bad_checksum_or_length_are_rejected() {
        let t = table(b"APIC", &[1, 2, 3, 4]);
        assert_eq!(parse_sdt(&t).unwrap().signature, *b"APIC");
        let mut bad = t.clone();
        bad[38] ^= 0xff;
        assert!(parse_sdt(&bad).is_none());
        assert!(parse_sdt(&t[..t.len() - 1]).is_none());
        let mut short = t.clone();
        short[4..8].copy_from_slice(&10u32.to_le_bytes());
        assert!(parse_sdt(&short).is_none());
    }

    #[test]
    fn rsdt_and_xsdt_entries_have_their_own_widths() {
        let rsdt = table(b"RSDT", &[0x00, 0x10, 0, 0, 0x00, 0x20, 0, 0]);
        let sdt = parse_sdt(&rsdt).unwrap();
        assert_eq!(root_entries(&sdt).collect::<Vec<_>>(), [0x1000, 0x2000]);
        let mut body = Vec::new();
        body.extend_from_slice(&0x1_0000_0000u64.to_le_bytes());
        let xsdt = table(b"XSDT", &body);
        let sdt = parse_sdt(&xsdt).unwrap();
        assert_eq!(root_entries(&sdt).collect::<Vec<_>>(), [0x1_0000_0000]);
    }

    #[test]
    fn madt_entries_are_decoded_and_unknown_ones_skipped() {
        let ioapic = [1u8, 12, 7, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0];
        let iso = [2u8, 10, 0, 0, 2, 0, 0, 0, 0, 0];
        let t = madt(&[&lapic(0, 0, 1), &iso, &ioapic, &x2apic(5, 300, 1)]);
        let sdt = parse_sdt(&t).unwrap();
        let entries: Vec<_> = madt_entries(&sdt).collect();
        assert_eq!(
            entries,
            [
                MadtEntry::LocalApic {
                    uid: 0,
                    apic_id: 0,
                    flags: 1
                },
                MadtEntry::IoApic {
                    id: 7,
                    address: 0xfec0_0000,
                    gsi_base: 0
                },
                MadtEntry::X2Apic {
                    uid: 5,
                    apic_id: 300,
                    flags: 1
                },
            ]
        );
    }

    #[test]
    fn madt_entry_with_zero_length_stops_the_walk() {
        let t = madt(&[&lapic(0, 0, 1), &[0, 0], &lapic(1, 1, 1)]);
        let sdt = parse_sdt(&t).unwrap();
        assert_eq!(madt_entries(&sdt).count(), 1);
    }

    #[test]
    fn madt_entry_running_past_the_table_is_ignored() {
        let t = madt(&[&lapic(0, 0, 1), &[0, 40, 1, 1]]);
        let sdt = parse_sdt(&t).unwrap();
        assert_eq!(madt_entries(&sdt).count(), 1);
    }

    #[test]
    fn cpus_are_listed_in_madt_order_with_the_bsp_marked() {
        let t = madt(&[
            &lapic(0, 2, 1),
            &lapic(1, 0, 1),
            &lapic(2, 1, 0),
            &lapic(3, 3, 2),
        ]);
        let sdt = parse_sdt(&t).unwrap();
        let list = cpus(madt_entries(&sdt), false, 0);
        assert_eq!(
            &list[..],
            &[
                Cpu {
                    uid: 0,
                    apic_id: 2,
                    is_bsp: false
                },
                Cpu {
                    uid: 1,
                    apic_id: 0,
                    is_bsp: true
                },
                // uid 2 is disabled and not online-capable: left out.
                Cpu {
                    uid: 3,
                    apic_id: 3,
                    is_bsp: false
                },
            ]
        );
    }

    #[test]
    fn x2apic_entries_count_only_in_x2apic_mode() {
        let t = madt(&[&lapic(0, 0, 1), &x2apic(1, 256, 1)]);
        let sdt = parse_sdt(&t).unwrap();
        assert_eq!(cpus(madt_entries(&sdt), false, 0).len(), 1);
        assert_eq!(cpus(madt_entries(&sdt), true, 0).len(), 2);
    }

    #[test]
    fn repeated_apic_id_is_listed_once() {
        let t = madt(&[&lapic(0, 0, 1), &x2apic(0, 0, 1)]);
        let sdt = parse_sdt(&t).unwrap();
        assert_eq!(cpus(madt_entries(&sdt), true, 0).len(), 1);
    }

    #[test]
    fn repeats_keep_the_first_listing_and_madt_order() {
        let t = madt(&[&lapic(0, 5, 1), &lapic(1, 2, 1), &lapic(2, 5, 1), &lapic(3, 9, 1), &lapic(4, 2, 1)]);
        let sdt = parse_sdt(&t).unwrap();
        let got: Vec<(u32, u32)> = cpus(madt_entries(&sdt), false, 2).iter().map(|c| (c.uid, c.apic_id)).collect();
        assert_eq!(got, [(0, 5), (1, 2), (3, 9)]);
    }

    #[test]
    fn three_hundred_cpus_with_x2apic_ids_are_all_listed() {
        // QEMU's MADT beyond 255 CPUs: local APIC entries up to ID 254, x2APIC entries above.
        let mut entries: Vec<Vec<u8>> = (0..255u32).map(|i| lapic(i as u8, i as u8, 1)).collect();
        entries.extend((255..300u32).map(|i| x2apic(i, i, 1)));
        let t = madt(&entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let sdt = parse_sdt(&t).unwrap();
        let listed = cpus(madt_entries(&sdt), true, 0);
        assert_eq!(listed.len(), 300);
        assert!(listed.iter().enumerate().all(|(i, c)| c.apic_id == i as u32));
        assert_eq!(listed.iter().filter(|c| c.is_bsp).count(), 1);
    }
}
