//! The Limine boot protocol structures the bridge writes, as the kernel sees them.
//!
//! Layouts follow Limine's PROTOCOL.md (x86-64); the host tests compare sizes and request IDs
//! with the `limine` crate the kernel is built against. Every pointer field is a `u64` holding
//! a higher-half direct map (HHDM) address.

/// The first two words of every request ID.
pub const COMMON_MAGIC: [u64; 2] = [0xc7b1_dd30_df4c_8b88, 0x0a82_e883_a194_f07b];

/// The base revision tag: two magic words, then the requested revision.
pub const BASE_REVISION_MAGIC: [u64; 2] = [0xf956_2b2d_5c95_a6c8, 0x6a7b_3849_4453_6bdc];
/// The highest base revision the bridge implements.
pub const MAX_BASE_REVISION: u64 = 3;

pub const REQUESTS_START_MARKER: [u64; 4] = [
    0xf6b8_f4b3_9de7_d1ae,
    0xfab9_1a69_40fc_b9cf,
    0x785c_6ed0_15d3_e316,
    0x181e_920a_7852_b9d9,
];
pub const REQUESTS_END_MARKER: [u64; 2] = [0xadc0_e053_1bb1_0d03, 0x9572_709f_3176_4c62];

/// A request's identity: the last two words of its ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub [u64; 2]);

impl RequestId {
    pub const fn full(self) -> [u64; 4] {
        [COMMON_MAGIC[0], COMMON_MAGIC[1], self.0[0], self.0[1]]
    }
}

pub const BOOTLOADER_INFO: RequestId = RequestId([0xf550_38d8_e2a1_202f, 0x2794_26fc_f5f5_9740]);
pub const EXECUTABLE_CMDLINE: RequestId = RequestId([0x4b16_1536_e598_651e, 0xb390_ad4a_2f1f_303a]);
pub const FIRMWARE_TYPE: RequestId = RequestId([0x8c2f_75d9_0bef_28a8, 0x7045_a468_8eac_00c3]);
pub const STACK_SIZE: RequestId = RequestId([0x224e_f046_0a8e_8926, 0xe1cb_0fc2_5f46_ea3d]);
pub const HHDM: RequestId = RequestId([0x48dc_f1cb_8ad2_b852, 0x6398_4e95_9a98_244b]);
pub const PAGING_MODE: RequestId = RequestId([0x95c1_a0ed_ab09_44cb, 0xa4e5_cb38_42f7_488a]);
pub const MP: RequestId = RequestId([0x95a6_7b81_9a1b_857e, 0xa0b6_1b72_3b6a_73e0]);
pub const MEMORY_MAP: RequestId = RequestId([0x67cf_3d9d_378a_806f, 0xe304_acdf_c50c_3c62]);
pub const ENTRY_POINT: RequestId = RequestId([0x13d8_6c03_5a1c_d3e1, 0x2b0c_aa89_d8f3_026a]);
pub const EXECUTABLE_FILE: RequestId = RequestId([0xad97_e90e_83f1_ed67, 0x31eb_5d1c_5ff2_3b69]);
pub const MODULE: RequestId = RequestId([0x3e7e_2797_02be_32af, 0xca1c_4f3b_d128_0cee]);
pub const RSDP: RequestId = RequestId([0xc5e7_7b6b_397e_7b43, 0x2763_7845_accd_cf3c]);
pub const EXECUTABLE_ADDRESS: RequestId = RequestId([0x71ba_7686_3cc5_5f63, 0xb264_4a48_c516_a487]);

/// Byte offsets inside every request: `id[4]`, `revision`, `response`, then its own fields.
pub const REQUEST_REVISION: usize = 32;
pub const REQUEST_RESPONSE: usize = 40;
/// First request-specific field (`stack_size`, MP `flags`, paging `mode`, entry point `entry`).
pub const REQUEST_FIELDS: usize = 48;

/// MP request flag: enable x2APIC if possible.
pub const MP_REQUEST_X2APIC: u64 = 1 << 0;
/// MP response flag: x2APIC has been enabled.
pub const MP_RESPONSE_X2APIC: u32 = 1 << 0;

pub const PAGING_MODE_4LEVEL: u64 = 0;
pub const FIRMWARE_X86_BIOS: u64 = 0;
pub const MEDIA_TYPE_GENERIC: u32 = 0;
pub const MEDIA_TYPE_OPTICAL: u32 = 1;

/// The stack size every CPU gets unless the kernel asks for more.
pub const DEFAULT_STACK_SIZE: u64 = 64 * 1024;

/// Memory map entry types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum MemoryType {
    Usable = 0,
    Reserved = 1,
    AcpiReclaimable = 2,
    AcpiNvs = 3,
    BadMemory = 4,
    BootloaderReclaimable = 5,
    ExecutableAndModules = 6,
    Framebuffer = 7,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemmapEntry {
    pub base: u64,
    pub length: u64,
    pub typ: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemmapResponse {
    pub revision: u64,
    pub entry_count: u64,
    pub entries: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BootloaderInfoResponse {
    pub revision: u64,
    pub name: u64,
    pub version: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FirmwareTypeResponse {
    pub revision: u64,
    pub firmware_type: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StackSizeResponse {
    pub revision: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct HhdmResponse {
    pub revision: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PagingModeResponse {
    pub revision: u64,
    pub mode: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct EntryPointResponse {
    pub revision: u64,
}

/// `struct limine_mp_info` (x86-64). Parked APs spin on `goto_address`; `reserved` holds
/// the AP's stack top, as in Limine.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MpInfo {
    pub processor_id: u32,
    pub lapic_id: u32,
    pub reserved: u64,
    pub goto_address: u64,
    pub extra_argument: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MpResponse {
    pub revision: u64,
    pub flags: u32,
    pub bsp_lapic_id: u32,
    pub cpu_count: u64,
    pub cpus: u64,
}

/// `struct limine_file`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct File {
    pub revision: u64,
    pub address: u64,
    pub size: u64,
    pub path: u64,
    pub string: u64,
    pub media_type: u32,
    pub unused: u32,
    pub tftp_ip: u32,
    pub tftp_port: u32,
    pub partition_index: u32,
    pub mbr_disk_id: u32,
    pub gpt_disk_uuid: [u8; 16],
    pub gpt_part_uuid: [u8; 16],
    pub part_uuid: [u8; 16],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ModuleResponse {
    pub revision: u64,
    pub module_count: u64,
    pub modules: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RsdpResponse {
    pub revision: u64,
    pub address: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutableFileResponse {
    pub revision: u64,
    pub file: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutableCmdlineResponse {
    pub revision: u64,
    pub cmdline: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutableAddressResponse {
    pub revision: u64,
    pub physical_base: u64,
    pub virtual_base: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MpInfo>() == 32);
    assert!(offset_of!(MpInfo, reserved) == 8);
    assert!(offset_of!(MpInfo, goto_address) == 16);
    assert!(size_of::<MpResponse>() == 32);
    assert!(size_of::<File>() == 112);
    assert!(offset_of!(File, media_type) == 40);
    assert!(size_of::<MemmapEntry>() == 24);
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn request_ids_match_the_limine_crate() {
        use limine::request::*;
        let pairs: [([u64; 4], RequestId); 13] = [
            (*BootloaderInfoRequest::new().id(), BOOTLOADER_INFO),
            (*ExecutableCmdlineRequest::new().id(), EXECUTABLE_CMDLINE),
            (*FirmwareTypeRequest::new().id(), FIRMWARE_TYPE),
            (*StackSizeRequest::new().id(), STACK_SIZE),
            (*HhdmRequest::new().id(), HHDM),
            (*PagingModeRequest::new().id(), PAGING_MODE),
            (*MpRequest::new().id(), MP),
            (*MemoryMapRequest::new().id(), MEMORY_MAP),
            (*EntryPointRequest::new().id(), ENTRY_POINT),
            (*ExecutableFileRequest::new().id(), EXECUTABLE_FILE),
            (*ModuleRequest::new().id(), MODULE),
            (*RsdpRequest::new().id(), RSDP),
            (*ExecutableAddressRequest::new().id(), EXECUTABLE_ADDRESS),
        ];
        for (crate_id, ours) in pairs {
            assert_eq!(crate_id, ours.full());
        }
    }

    #[test]
    fn response_layouts_match_the_limine_crate() {
        use limine::response as r;
        assert_eq!(size_of::<MpInfo>(), size_of::<limine::mp::Cpu>());
        assert_eq!(size_of::<MpResponse>(), size_of::<r::MpResponse>());
        assert_eq!(size_of::<File>(), size_of::<limine::file::File>());
        assert_eq!(
            size_of::<MemmapEntry>(),
            size_of::<limine::memory_map::Entry>()
        );
        assert_eq!(
            size_of::<MemmapResponse>(),
            size_of::<r::MemoryMapResponse>()
        );
        assert_eq!(size_of::<ModuleResponse>(), size_of::<r::ModuleResponse>());
        assert_eq!(size_of::<RsdpResponse>(), size_of::<r::RsdpResponse>());
        assert_eq!(size_of::<HhdmResponse>(), size_of::<r::HhdmResponse>());
        assert_eq!(
            size_of::<ExecutableAddressResponse>(),
            size_of::<r::ExecutableAddressResponse>()
        );
        assert_eq!(
            size_of::<BootloaderInfoResponse>(),
            size_of::<r::BootloaderInfoResponse>()
        );
    }

    #[test]
    fn request_field_offsets_match_the_limine_crate() {
        // The crate's StackSizeRequest stores `size` right after the response pointer.
        let request = limine::request::StackSizeRequest::new().with_size(0x1234_5678);
        // SAFETY: the request is a repr(C) struct of u64-sized fields; reading its words is
        // reading plain integers.
        let words: [u64; 7] = unsafe { core::mem::transmute(request) };
        assert_eq!(words[REQUEST_REVISION / 8], 0);
        assert_eq!(words[REQUEST_RESPONSE / 8], 0);
        assert_eq!(words[REQUEST_FIELDS / 8], 0x1234_5678);

        let mp = limine::request::MpRequest::new().with_flags(limine::mp::RequestFlags::X2APIC);
        // SAFETY: as above.
        let words: [u64; 7] = unsafe { core::mem::transmute(mp) };
        assert_eq!(words[REQUEST_FIELDS / 8], MP_REQUEST_X2APIC);
    }

    #[test]
    fn base_revision_tag_matches_the_limine_crate() {
        let tag = limine::BaseRevision::with_revision(3);
        // SAFETY: BaseRevision is three u64 words.
        let words: [u64; 3] = unsafe { core::mem::transmute(tag) };
        assert_eq!(words, [BASE_REVISION_MAGIC[0], BASE_REVISION_MAGIC[1], 3]);
    }
}
