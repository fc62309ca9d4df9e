//! The Limine protocol, from the kernel's side: the requests, and one checked view of the
//! answers (`BootInfo`) so nothing else in the kernel touches `limine` types.
//!
//! Base revisions: we ask for revision 3. A bootloader that supports it (the `boot/` bridge,
//! Limine 9+) marks the tag as supported and reports physical RSDP addresses; Limine 8.x
//! supports up to revision 2, leaves the tag unsupported, and reports the RSDP as a virtual
//! (HHDM) address. `rsdp_phys` normalizes that difference.

use limine::mp::RequestFlags as MpFlags;
use limine::request::*;
use limine::BaseRevision;

#[used]
#[link_section = ".limine_requests_start"]
static REQUESTS_START: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[link_section = ".limine_requests"]
static BASE_REVISION: BaseRevision = BaseRevision::with_revision(3);

#[used]
#[link_section = ".limine_requests"]
static BOOTLOADER_INFO: BootloaderInfoRequest = BootloaderInfoRequest::new();

/// The BSP's boot stack; each CPU moves to its own guarded kernel stack early.
#[used]
#[link_section = ".limine_requests"]
static STACK_SIZE: StackSizeRequest = StackSizeRequest::new().with_size(64 * 1024);

#[used]
#[link_section = ".limine_requests"]
static HHDM: HhdmRequest = HhdmRequest::new();

#[used]
#[link_section = ".limine_requests"]
static MEMORY_MAP: MemoryMapRequest = MemoryMapRequest::new();

#[used]
#[link_section = ".limine_requests"]
static MP: MpRequest = MpRequest::new().with_flags(MpFlags::X2APIC);

#[used]
#[link_section = ".limine_requests"]
static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[link_section = ".limine_requests"]
static MODULES: ModuleRequest = ModuleRequest::new();

#[used]
#[link_section = ".limine_requests"]
static EXECUTABLE_FILE: ExecutableFileRequest = ExecutableFileRequest::new();

#[used]
#[link_section = ".limine_requests"]
static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[link_section = ".limine_requests_end"]
static REQUESTS_END: RequestsEndMarker = RequestsEndMarker::new();

pub use limine::memory_map::{Entry as MemoryMapEntry, EntryType as MemoryType};
pub use limine::mp::Cpu as MpCpu;
pub use limine::file::File as BootFile;

/// Everything the kernel needs from the bootloader, checked once on the BSP.
pub struct BootInfo {
    pub revision: u64,
    pub bootloader: (&'static str, &'static str),
    pub hhdm_offset: u64,
    pub memory_map: &'static [&'static MemoryMapEntry],
    pub kernel_phys_base: u64,
    pub kernel_virt_base: u64,
    pub cmdline: &'static str,
    pub rsdp_phys: Option<u64>,
    pub modules: &'static [&'static BootFile],
}

/// Why the kernel cannot run with what the bootloader answered.
#[derive(Debug)]
pub enum BootError {
    NoBaseRevision,
    Missing(&'static str),
    CmdlineNotUtf8,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoBaseRevision => write!(f, "the bootloader does not speak the Limine protocol base revision 2 or newer"),
            Self::Missing(what) => write!(f, "the bootloader gave no {what} response"),
            Self::CmdlineNotUtf8 => write!(f, "the kernel command line is not UTF-8"),
        }
    }
}

impl BootInfo {
    pub fn from_bootloader() -> Result<Self, BootError> {
        // A bootloader that cannot honour revision 3 boots us with the newest revision it
        // has; newer Limine releases report which one, Limine 8.x (up to revision 2) does not.
        let revision = if BASE_REVISION.is_supported() {
            3
        } else {
            match BASE_REVISION.loaded_revision() {
                Some(r) if r >= 2 => r,
                Some(_) => return Err(BootError::NoBaseRevision),
                None => 2,
            }
        };
        let bootloader = BOOTLOADER_INFO
            .get_response()
            .map(|r| (r.name(), r.version()))
            .unwrap_or(("unknown", "?"));
        let hhdm_offset = HHDM.get_response().ok_or(BootError::Missing("HHDM"))?.offset();
        let memory_map = MEMORY_MAP.get_response().ok_or(BootError::Missing("memory map"))?.entries();
        let address = EXECUTABLE_ADDRESS.get_response().ok_or(BootError::Missing("executable address"))?;
        let cmdline = match EXECUTABLE_FILE.get_response() {
            Some(file) => file.file().string().to_str().map_err(|_| BootError::CmdlineNotUtf8)?,
            None => "",
        };
        // Revision 3 reports the RSDP's physical address; earlier revisions an HHDM pointer.
        let rsdp_phys = RSDP.get_response().map(|r| {
            let a = r.address() as u64;
            if revision >= 3 || a < hhdm_offset { a } else { a - hhdm_offset }
        });
        let modules = MODULES.get_response().map(|r| r.modules()).unwrap_or(&[]);
        Ok(Self {
            revision,
            bootloader,
            hhdm_offset,
            memory_map,
            kernel_phys_base: address.physical_base(),
            kernel_virt_base: address.virtual_base(),
            cmdline: cmdline.trim(),
            rsdp_phys,
            modules,
        })
    }
}

/// The MP response: the BSP's LAPIC ID, whether the bootloader enabled x2APIC, and every CPU.
pub fn mp() -> Option<(u32, bool, &'static [&'static MpCpu])> {
    MP.get_response().map(|r| {
        (r.bsp_lapic_id(), r.flags().contains(limine::mp::ResponseFlags::X2APIC), r.cpus())
    })
}

/// The contents of the boot module whose path ends in `/name` (as limine.cfg lists it).
pub fn module(name: &str) -> Option<&'static [u8]> {
    let modules = MODULES.get_response()?.modules();
    modules.iter().find(|m| m.path().to_bytes().rsplit(|&b| b == b'/').next() == Some(name.as_bytes())).map(|m| {
        // SAFETY: the bootloader maps each module at `addr` for `size` bytes, in memory it
        // reports as executable-and-modules, which the kernel never reuses.
        unsafe { core::slice::from_raw_parts(m.addr(), m.size() as usize) }
    })
}

/// The command line limine.cfg gives the module `name`.
pub fn module_cmdline(name: &str) -> &'static str {
    MODULES
        .get_response()
        .and_then(|r| r.modules().iter().find(|m| m.path().to_bytes().ends_with(name.as_bytes())).map(|m| m.string().to_str().unwrap_or("")))
        .unwrap_or("")
}
