//! The boot flow on the BSP: read what GRUB gave us, load the kernel, build its address space,
//! answer its requests, start the APs, and jump.
//!
//! Every failure prints one line saying what is wrong and halts: a misconfigured grub.cfg or a
//! broken kernel must never boot halfway.

use super::handoff::Handoff;
use super::serial::{self, say};
use super::trampoline::{self, ApSetup, ApSlot, FarPointer, Pointer32, Pointer64, TrampolineData, AP_SETUP};
use super::{cpu, entry, gdt, idt, lapic, phys, pit};
use bridge::acpi::{self, MadtEntry, Sdt};
use bridge::fixed::FixedVec;
use bridge::layout::{self, HHDM_OFFSET, KERNEL_MIN_VADDR};
use bridge::mbi::Mbi;
use bridge::memmap::{self, FirmwareMap, PhysAllocator, Range, PAGE_SIZE};
use bridge::modstring::{self, Printable, Role};
use bridge::paging::{AddressSpace, TableMemory};
use bridge::protocol::{self as p, MemoryType};
use bridge::requests::{self, Request, Scan};
use core::fmt;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{fence, Ordering};
use elf::Elf;
use x86_64::instructions::port::Port;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;

const MAX_MODULES: usize = 64;
const ONE_MIB: u64 = 1 << 20;
const FOUR_GIB: u64 = 1 << 32;
/// Where the bridge allocates: above the real-mode area, inside the temporary identity map.
const ALLOC_WINDOW: Range = Range::new(ONE_MIB, FOUR_GIB);
/// Where a STARTUP IPI can point: a page below 1 MiB (Intel SDM Vol. 3A, 9.4.4.1).
const LOW_WINDOW: Range = Range::new(PAGE_SIZE, ONE_MIB);
const ARENA_CHUNK: u64 = 64 * 1024;
const BOOTLOADER_NAME: &[u8] = b"limine-bridge";
const BOOTLOADER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// GRUB numbers CD drives from 0xe0 (its biosdisk driver).
const FIRST_CD_DRIVE: u32 = 0xe0;
/// How long an AP gets to reach its park loop after its STARTUP IPIs.
const AP_TIMEOUT_US: u64 = 1_000_000;
/// More time for each AP started at once (hundreds of emulated CPUs share a few host cores).
const AP_TIMEOUT_PER_CPU_US: u64 = 20_000;
/// Largest APIC-ID table the trampoline indexes (16 bytes an entry: 1 MiB).
const MAX_SLOT_TABLE: u64 = 1 << 16;
/// The NMI's vector (Intel SDM Vol. 3A, 6.3.1).
const NMI_VECTOR: usize = 2;

extern "C" {
    static __bridge_start: u8;
    static __bridge_end: u8;
}

/// Prints why the kernel cannot boot, and halts.
fn fail(args: fmt::Arguments) -> ! {
    serial::line(args);
    serial::line(format_args!("cannot boot the kernel; halting"));
    super::halt()
}

trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| fail(format_args!("{what}: {e}")))
    }
}

/// A file GRUB loaded, with what its module string says about it.
#[derive(Clone, Copy, Default)]
struct GrubFile {
    start: u64,
    size: u64,
    kernel: bool,
    uri: &'static [u8],
    path: &'static [u8],
    leading_slash: bool,
    cmdline: &'static [u8],
}

impl GrubFile {
    fn range(&self) -> Range {
        Range::new(self.start, self.start + self.size)
    }
}

/// Bump allocation of response structures in bootloader-reclaimable chunks.
struct Arena {
    next: u64,
    end: u64,
}

impl Arena {
    fn reserve(&mut self, alloc: &mut PhysAllocator, size: u64, align: u64) -> u64 {
        let start = (self.next + align - 1) & !(align - 1);
        if start + size <= self.end && self.end != 0 {
            self.next = start + size;
            return start;
        }
        let chunk = memmap::page_ceil(size.max(ARENA_CHUNK));
        let base = alloc
            .alloc(
                chunk,
                PAGE_SIZE,
                MemoryType::BootloaderReclaimable,
                ALLOC_WINDOW,
            )
            .or_fail("allocating boot responses");
        // SAFETY: the chunk was just allocated for us and is mapped.
        unsafe { phys::bytes_mut(base, chunk as usize).fill(0) };
        self.next = base + size;
        self.end = base + chunk;
        base
    }

    fn put<T: Copy>(&mut self, alloc: &mut PhysAllocator, value: T) -> u64 {
        let at = self.reserve(alloc, size_of::<T>() as u64, 8);
        // SAFETY: freshly reserved, 8-byte aligned, ours.
        unsafe { phys::write(at, value) };
        at
    }

    /// A NUL-terminated copy of `parts`, concatenated.
    fn put_str(&mut self, alloc: &mut PhysAllocator, parts: &[&[u8]]) -> u64 {
        let len: usize = parts.iter().map(|s| s.len()).sum();
        let at = self.reserve(alloc, len as u64 + 1, 1);
        // SAFETY: freshly reserved, ours.
        let dst = unsafe { phys::bytes_mut(at, len + 1) };
        let mut i = 0;
        for part in parts {
            dst[i..i + part.len()].copy_from_slice(part);
            i += part.len();
        }
        dst[len] = 0;
        at
    }
}

/// Page-table frames from the allocator, zeroed, written through the physical window.
struct Tables<'a>(&'a mut PhysAllocator);

impl TableMemory for Tables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let frame = self
            .0
            .alloc(
                PAGE_SIZE,
                PAGE_SIZE,
                MemoryType::BootloaderReclaimable,
                ALLOC_WINDOW,
            )
            .ok()?;
        // SAFETY: a fresh frame, mapped.
        unsafe { phys::bytes_mut(frame, PAGE_SIZE as usize).fill(0) };
        Some(frame)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a frame from alloc_table; index < 512.
        unsafe { phys::read(table + 8 * index as u64) }
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in `read`; the tables are not live yet.
        unsafe { phys::write(table + 8 * index as u64, entry) }
    }
}

/// The loaded kernel image and the requests found in it.
struct Kernel {
    elf: Elf<'static>,
    block: u64,
    scan: Scan,
}

impl Kernel {
    fn image_len(&self) -> u64 {
        self.elf.span().len()
    }

    /// A word of a request, or `None` if it lies outside the image.
    fn field(&self, request: Request, offset: usize) -> Option<u64> {
        let at = (request.offset + offset) as u64;
        // SAFETY: bounds-checked against the loaded image, which we own until the hand-off.
        (at + 8 <= self.image_len()).then(|| unsafe { phys::read::<u64>(self.block + at) })
    }

    fn request(&self, id: p::RequestId) -> Option<Request> {
        self.scan.find(id)
    }

    /// Points the request's `response` at `response` (a physical address in the arena).
    fn respond(&self, request: Request, response: u64) {
        let at = (request.offset + p::REQUEST_RESPONSE) as u64;
        if at + 8 <= self.image_len() {
            // SAFETY: inside the loaded image, 8-byte aligned (requests are).
            unsafe { phys::write(self.block + at, response + HHDM_OFFSET) };
        }
    }
}

#[no_mangle]
pub extern "C" fn bridge_main(mbi_phys: u32) -> ! {
    entry::arm_stack_canary();
    serial::init();
    idt::init();
    let handoff = boot(u64::from(mbi_phys));
    if !entry::stack_intact() {
        fail(format_args!(
            "internal error: the bridge's stack overflowed"
        ));
    }
    serial::flush();
    handoff.jump()
}

fn boot(mbi_phys: u64) -> Handoff {
    // SAFETY: GRUB's MBI: at least its 4-byte size field is readable at EBX.
    let mbi_size = unsafe { phys::read::<u32>(mbi_phys) } as usize;
    if !(16..=(16 << 20)).contains(&mbi_size) {
        fail(format_args!(
            "GRUB's boot information has an implausible size {mbi_size}"
        ));
    }
    // SAFETY: the MBI occupies `mbi_size` bytes that nothing overwrites (it is excluded from
    // allocation) until the hand-off.
    let mbi_bytes: &'static [u8] = unsafe { phys::bytes(mbi_phys, mbi_size) };
    let mbi = Mbi::parse(mbi_bytes).or_fail("GRUB's boot information is malformed");

    let mut files = grub_files(&mbi);
    say!("booting {}", Printable(kernel_of(&files).uri));

    let regions = mbi.memory_map().unwrap_or_else(|| {
        fail(format_args!(
            "GRUB gave no memory map (multiboot2 mmap tag)"
        ))
    });
    let firmware = memmap::resolve_firmware(regions).or_fail("reading the memory map");

    // Linker-script symbols delimiting the bridge image.
    let image = Range::new(
        core::ptr::addr_of!(__bridge_start) as u64,
        core::ptr::addr_of!(__bridge_end) as u64,
    );
    let mbi_range = Range::new(mbi_phys, mbi_phys + mbi_size as u64);
    let mut occupied: FixedVec<Range, { MAX_MODULES + 2 }> = FixedVec::new();
    let _ = occupied.push(image);
    let _ = occupied.push(mbi_range);
    for f in files.iter() {
        let _ = occupied.push(f.range());
    }
    let mut alloc =
        PhysAllocator::new(&firmware, &occupied, FOUR_GIB).or_fail("reading the memory map");
    let reclaimable = MemoryType::BootloaderReclaimable;
    alloc.claim(image, reclaimable).or_fail("memory map");
    alloc.claim(mbi_range, reclaimable).or_fail("memory map");
    for f in files.iter_mut() {
        // Limine keeps the kernel file in bootloader-reclaimable memory, modules in
        // executable-and-modules memory.
        let kind = if f.kernel {
            reclaimable
        } else {
            MemoryType::ExecutableAndModules
        };
        alloc.claim(f.range(), kind).or_fail("memory map");
        page_align(&mut alloc, f, kind);
    }
    let kernel_file = kernel_of(&files);

    let rsdp = find_rsdp(&mbi, mbi_phys);
    let kernel = load_kernel(&mut alloc, &kernel_file);
    let revision = kernel.scan.loaded_revision();
    let features = cpu::Features::detect();
    check_paging_mode(&kernel);
    let entry = entry_point(&kernel);

    // The kernel's address space; the bridge moves onto it right away.
    let mut tables = Tables(&mut alloc);
    let space = AddressSpace::new(&mut tables).or_fail("building page tables");
    let granule = layout::direct_granule(features.gigantic_pages);
    let direct = layout::direct_map_ranges(&firmware, granule, features.phys_bits);
    let identity_end = layout::identity_end(revision);
    layout::map_direct(
        &space,
        &mut tables,
        &direct,
        features.gigantic_pages,
        identity_end,
    )
    .or_fail("building the direct map");
    layout::map_kernel(&space, &mut tables, &kernel.elf, kernel.block, features.nx)
        .or_fail("mapping the kernel");
    switch_address_space(&space, &features);

    let acpi_tables = AcpiTables::new(rsdp);
    let stack_size = stack_size(&kernel);
    let bsp_stack = alloc
        .alloc(stack_size, PAGE_SIZE, reclaimable, ALLOC_WINDOW)
        .or_fail("allocating the kernel stack");

    let mut arena = Arena { next: 0, end: 0 };
    let mut ctx = Responder {
        kernel: &kernel,
        alloc: &mut alloc,
        arena: &mut arena,
        parked: None,
    };
    ctx.simple_responses(revision, rsdp, &kernel_file, &files, &mbi);
    let cpus = ctx
        .kernel
        .request(p::MP)
        .map(|request| ctx.start_cpus(request, &acpi_tables, &features, &space, stack_size));
    let entries = ctx.memory_map(&firmware);
    let parked = ctx.parked.take();

    mask_legacy_interrupts(&acpi_tables);
    write_base_revision(&kernel);

    let requested = kernel.scan.base_revision.map(|t| t.requested);
    let cpus = Cpus(cpus.flatten());
    say!(
        "base revision {revision}{}, {cpus}, {} module(s), {entries} memory map entries; entering the kernel at {entry:#x}",
        Requested(requested, revision),
        files.len() - 1,
    );

    let gdtr = Pointer64 {
        limit: gdt::GDT_LIMIT,
        base: gdt::gdt_phys() + HHDM_OFFSET,
    };
    let gdtr = alloc_static_gdtr(gdtr);
    // Last: from here on the APs poll their goto_address, and every host cycle they take is
    // one the BSP does not get under an emulator.
    if let Some(parked) = parked {
        parked.wake();
    }
    Handoff {
        entry,
        stack_top: HHDM_OFFSET + bsp_stack + stack_size,
        pml4_hhdm: HHDM_OFFSET + space.pml4,
        unmap_lower_half: revision >= 1,
        gdtr: gdtr as *const Pointer64 as u64,
        hhdm: HHDM_OFFSET,
    }
}

/// The final GDTR operand, in bridge memory that stays mapped through the hand-off.
fn alloc_static_gdtr(value: Pointer64) -> &'static Pointer64 {
    struct Slot(core::cell::UnsafeCell<Pointer64>);
    // SAFETY: written once by the BSP right before the hand-off, read by LGDT only.
    unsafe impl Sync for Slot {}
    static SLOT: Slot = Slot(core::cell::UnsafeCell::new(Pointer64 { limit: 0, base: 0 }));
    // SAFETY: only the BSP runs this, once.
    unsafe {
        *SLOT.0.get() = value;
        &*SLOT.0.get()
    }
}

struct Requested(Option<u64>, u64);

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, " (no base revision tag)"),
            Some(r) if r != self.1 => write!(f, " (kernel asked for {r})"),
            Some(_) => Ok(()),
        }
    }
}

struct Cpus(Option<(usize, usize)>);

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((up, found)) if up == found => write!(f, "{up} CPU(s)"),
            Some((up, found)) => write!(f, "{up} of {found} CPUs"),
            None => write!(f, "no MP response"),
        }
    }
}

/// GRUB's modules, each with its parsed module string; exactly one is the kernel.
fn grub_files(mbi: &Mbi<'static>) -> FixedVec<GrubFile, MAX_MODULES> {
    let mut files = FixedVec::new();
    for (i, m) in mbi.modules().enumerate() {
        let spec = modstring::parse(m.string).unwrap_or_else(|e| {
            fail(format_args!(
                "GRUB module {i} (`{}`): {e}",
                Printable(m.string)
            ))
        });
        let file = GrubFile {
            start: u64::from(m.start),
            size: u64::from(m.end - m.start),
            kernel: spec.role == Role::Kernel,
            uri: spec.uri,
            path: spec.path,
            leading_slash: spec.needs_leading_slash(),
            cmdline: spec.cmdline,
        };
        if files.push(file).is_err() {
            fail(format_args!("more than {MAX_MODULES} GRUB modules"));
        }
    }
    modstring::find_kernel(
        files
            .iter()
            .map(|f| if f.kernel { Role::Kernel } else { Role::Module }),
    )
    .or_fail("grub.cfg");
    files
}

/// The one kernel among GRUB's files (`grub_files` checked there is exactly one).
fn kernel_of(files: &[GrubFile]) -> GrubFile {
    *files
        .iter()
        .find(|f| f.kernel)
        .unwrap_or_else(|| unreachable!())
}

/// Files must start on a page (PROTOCOL.md, File Structure); GRUB honours our module-alignment
/// tag, but a file that is not aligned anyway is copied.
fn page_align(alloc: &mut PhysAllocator, file: &mut GrubFile, kind: MemoryType) {
    if file.start.is_multiple_of(PAGE_SIZE) {
        return;
    }
    let copy = alloc
        .alloc(file.size, PAGE_SIZE, kind, ALLOC_WINDOW)
        .or_fail("copying a module");
    // SAFETY: source is GRUB's module, destination a fresh allocation; they do not overlap.
    unsafe {
        phys::bytes_mut(copy, file.size as usize)
            .copy_from_slice(phys::bytes(file.start, file.size as usize));
    }
    file.start = copy;
}

/// The RSDP: the firmware's own copy if a signature-and-checksum search of the EBDA and the
/// BIOS area finds one, else GRUB's copy inside the MBI (bootloader-reclaimable memory).
fn find_rsdp(mbi: &Mbi, mbi_phys: u64) -> Option<u64> {
    let grub_copy = mbi
        .rsdp_copies()
        .find(|c| acpi::parse_rsdp(c.bytes).is_some());
    // SAFETY: the BIOS data area word at 0x40e holds the EBDA segment; low memory is mapped.
    let ebda = u64::from(unsafe { phys::read::<u16>(0x40e) }) << 4;
    // SAFETY: the first KiB of the EBDA and the BIOS area are mapped firmware memory.
    let ebda_area: &[u8] = if (0x80000..0xa0000).contains(&ebda) {
        unsafe { phys::bytes(ebda, 1024) }
    } else {
        &[]
    };
    // SAFETY: as above.
    let bios_area = unsafe { phys::bytes(0xe0000, 0x20000) };
    let areas: [(u64, &[u8]); 2] = [(ebda, ebda_area), (0xe0000, bios_area)];
    acpi::choose_rsdp(&areas, grub_copy.map(|c| c.bytes))
        .or(grub_copy.map(|c| mbi_phys + c.offset as u64))
}

fn load_kernel(alloc: &mut PhysAllocator, file: &GrubFile) -> Kernel {
    // SAFETY: GRUB's kernel module, excluded from allocation, unchanged until the hand-off.
    let bytes: &'static [u8] = unsafe { phys::bytes(file.start, file.size as usize) };
    let elf = Elf::parse(bytes).or_fail("the kernel is not a loadable ELF executable");
    let span = elf.span();
    if span.start < KERNEL_MIN_VADDR {
        fail(format_args!(
            "the kernel is linked at {:#x}; the Limine protocol loads kernels at or above {KERNEL_MIN_VADDR:#x}",
            elf.min_vaddr()
        ));
    }
    let align = elf.max_align().clamp(PAGE_SIZE, 2 * ONE_MIB);
    let block = alloc
        .alloc(
            span.len(),
            align,
            MemoryType::ExecutableAndModules,
            ALLOC_WINDOW,
        )
        .or_fail("no room to load the kernel");
    // SAFETY: the block was just allocated for the image.
    let image = unsafe { phys::bytes_mut(block, span.len() as usize) };
    image.fill(0);
    for seg in elf.segments() {
        let at = (seg.vaddr - span.start) as usize;
        image[at..at + seg.data.len()].copy_from_slice(seg.data);
    }
    let scan = requests::scan(image).or_fail("the kernel's Limine requests are invalid");
    Kernel { elf, block, scan }
}

/// The paging mode request may only ask for what the bridge gives: 4-level paging.
fn check_paging_mode(kernel: &Kernel) {
    let Some(request) = kernel.request(p::PAGING_MODE) else {
        return;
    };
    let revision = kernel.field(request, p::REQUEST_REVISION).unwrap_or(0);
    let mode = kernel.field(request, p::REQUEST_FIELDS).unwrap_or(0);
    // Request revision 1 adds max_mode and min_mode; revision 0 means "up to `mode`".
    let min_mode = if revision >= 1 {
        kernel.field(request, p::REQUEST_FIELDS + 16)
    } else {
        None
    };
    if min_mode.unwrap_or(p::PAGING_MODE_4LEVEL) > p::PAGING_MODE_4LEVEL {
        fail(format_args!(
            "the kernel requires 5-level paging (paging mode request: mode {mode}, min_mode {}); the bridge provides 4-level paging only",
            min_mode.unwrap_or(0)
        ));
    }
}

/// The ELF entry point, or the one the entry point request names (it must be executable).
fn entry_point(kernel: &Kernel) -> u64 {
    let Some(request) = kernel.request(p::ENTRY_POINT) else {
        return kernel.elf.entry();
    };
    let entry = kernel.field(request, p::REQUEST_FIELDS).unwrap_or(0);
    let executable = kernel
        .elf
        .segments()
        .any(|s| s.flags.executable() && s.vaddr <= entry && entry < s.end());
    if !executable {
        fail(format_args!(
            "the entry point request names {entry:#x}, outside the kernel's code"
        ));
    }
    entry
}

fn stack_size(kernel: &Kernel) -> u64 {
    let requested = kernel
        .request(p::STACK_SIZE)
        .and_then(|r| kernel.field(r, p::REQUEST_FIELDS))
        .unwrap_or(0);
    memmap::page_ceil(requested.max(p::DEFAULT_STACK_SIZE))
}

/// Loads the kernel's page tables (with NX, the protocol's PAT and WP on) and reaches
/// physical memory through the HHDM from then on.
fn switch_address_space(space: &AddressSpace, features: &cpu::Features) {
    // SAFETY: NXE before any NX bit is live; the PAT value is the protocol's layout; the new
    // tables map the bridge (identity), its stack and every physical page it will touch
    // (HHDM), so execution continues seamlessly; WP only makes read-only pages read-only.
    unsafe {
        if features.nx {
            Efer::update(|f| *f |= EferFlags::NO_EXECUTE_ENABLE);
        }
        if features.pat {
            cpu::write_msr(cpu::IA32_PAT, cpu::PAT_LAYOUT);
        }
        let frame = PhysFrame::from_start_address(x86_64::PhysAddr::new(space.pml4))
            .unwrap_or_else(|_| unreachable!());
        Cr3::write(frame, Cr3Flags::empty());
        Cr0::update(|f| *f |= Cr0Flags::WRITE_PROTECT);
    }
    phys::set_window(HHDM_OFFSET);
}

/// The ACPI tables, reached through the direct map.
struct AcpiTables {
    root: Option<Sdt<'static>>,
}

impl AcpiTables {
    fn new(rsdp: Option<u64>) -> Self {
        let root = rsdp.and_then(|at| {
            // SAFETY: a checked RSDP is at least 20 bytes; 36 are read only for revision 2+
            // (whose length field says so), all inside firmware memory the direct map covers.
            let head = unsafe { phys::bytes(at, 20) };
            let len = if head[15] >= 2 { 36 } else { 20 };
            let rsdp = acpi::parse_rsdp(unsafe { phys::bytes(at, len) })?;
            read_table(rsdp.xsdt.unwrap_or(u64::from(rsdp.rsdt)))
        });
        AcpiTables { root }
    }

    fn find(&self, signature: &[u8; 4]) -> Option<Sdt<'static>> {
        let root = self.root.as_ref()?;
        acpi::root_entries(root)
            .filter_map(read_table)
            .find(|t| &t.signature == signature)
    }
}

fn read_table(at: u64) -> Option<Sdt<'static>> {
    if at == 0 {
        return None;
    }
    // SAFETY: ACPI tables live in firmware memory the direct map covers; the header gives the
    // length, bounded before the whole table is read.
    let len = acpi::sdt_length(unsafe { phys::bytes(at, acpi::SDT_HEADER_LEN) })?;
    if !(acpi::SDT_HEADER_LEN..=(16 << 20)).contains(&len) {
        return None;
    }
    acpi::parse_sdt(unsafe { phys::bytes(at, len) })
}

/// Writes responses into the kernel's requests.
struct Responder<'a> {
    kernel: &'a Kernel,
    alloc: &'a mut PhysAllocator,
    arena: &'a mut Arena,
    /// The APs halted in the trampoline, woken right before the hand-off.
    parked: Option<Parked>,
}

impl Responder<'_> {
    fn put<T: Copy>(&mut self, value: T) -> u64 {
        self.arena.put(self.alloc, value)
    }

    fn answer<T: Copy>(&mut self, id: p::RequestId, response: T) {
        if let Some(request) = self.kernel.request(id) {
            let at = self.put(response);
            self.kernel.respond(request, at);
        }
    }

    fn file(&mut self, f: &GrubFile, boot: Option<bridge::mbi::BootDevice>) -> p::File {
        let slash: &[u8] = if f.leading_slash { b"/" } else { b"" };
        let path = self.arena.put_str(self.alloc, &[slash, f.path]);
        let string = self.arena.put_str(self.alloc, &[f.cmdline]);
        let optical = boot.is_some_and(|b| b.biosdev >= FIRST_CD_DRIVE && b.biosdev <= 0xff);
        let partition = boot.map_or(0, |b| {
            if b.partition == u32::MAX {
                0
            } else {
                b.partition + 1
            }
        });
        p::File {
            address: HHDM_OFFSET + f.start,
            size: f.size,
            path: HHDM_OFFSET + path,
            string: HHDM_OFFSET + string,
            media_type: if optical {
                p::MEDIA_TYPE_OPTICAL
            } else {
                p::MEDIA_TYPE_GENERIC
            },
            partition_index: partition,
            ..Default::default()
        }
    }

    /// Every response that needs no hardware work.
    fn simple_responses(
        &mut self,
        revision: u64,
        rsdp: Option<u64>,
        kernel_file: &GrubFile,
        files: &[GrubFile],
        mbi: &Mbi,
    ) {
        let k = self.kernel;
        if k.request(p::BOOTLOADER_INFO).is_some() {
            let name = self.arena.put_str(self.alloc, &[BOOTLOADER_NAME]);
            let version = self
                .arena
                .put_str(self.alloc, &[BOOTLOADER_VERSION.as_bytes()]);
            self.answer(
                p::BOOTLOADER_INFO,
                p::BootloaderInfoResponse {
                    revision: 0,
                    name: HHDM_OFFSET + name,
                    version: HHDM_OFFSET + version,
                },
            );
        }
        self.answer(
            p::FIRMWARE_TYPE,
            p::FirmwareTypeResponse {
                revision: 0,
                firmware_type: p::FIRMWARE_X86_BIOS,
            },
        );
        self.answer(p::STACK_SIZE, p::StackSizeResponse { revision: 0 });
        self.answer(
            p::HHDM,
            p::HhdmResponse {
                revision: 0,
                offset: HHDM_OFFSET,
            },
        );
        self.answer(
            p::PAGING_MODE,
            p::PagingModeResponse {
                revision: 0,
                mode: p::PAGING_MODE_4LEVEL,
            },
        );
        self.answer(p::ENTRY_POINT, p::EntryPointResponse { revision: 0 });
        if let Some(rsdp) = rsdp {
            // Base revision 3 alone reports the RSDP as a physical address.
            let address = if revision == 3 {
                rsdp
            } else {
                rsdp + HHDM_OFFSET
            };
            self.answer(
                p::RSDP,
                p::RsdpResponse {
                    revision: 0,
                    address,
                },
            );
        }
        let span = k.elf.span();
        self.answer(
            p::EXECUTABLE_ADDRESS,
            p::ExecutableAddressResponse {
                revision: 0,
                physical_base: k.block + (k.elf.min_vaddr() - span.start),
                virtual_base: k.elf.min_vaddr(),
            },
        );

        let boot = mbi.boot_device();
        if k.request(p::EXECUTABLE_FILE).is_some() || k.request(p::EXECUTABLE_CMDLINE).is_some() {
            let file = self.file(kernel_file, boot);
            let string = file.string;
            let file = self.put(file);
            self.answer(
                p::EXECUTABLE_FILE,
                p::ExecutableFileResponse {
                    revision: 0,
                    file: HHDM_OFFSET + file,
                },
            );
            self.answer(
                p::EXECUTABLE_CMDLINE,
                p::ExecutableCmdlineResponse {
                    revision: 0,
                    cmdline: string,
                },
            );
        }

        let count = files.iter().filter(|f| !f.kernel).count();
        // Like Limine: no modules, no module response. Internal modules (request revision 1)
        // are not loaded, so the response says revision 0.
        if k.request(p::MODULE).is_some() && count > 0 {
            let list = self.arena.reserve(self.alloc, 8 * count as u64, 8);
            for (i, f) in files.iter().filter(|f| !f.kernel).enumerate() {
                let file = self.file(f, boot);
                let at = self.put(file);
                // SAFETY: inside the list just reserved.
                unsafe { phys::write(list + 8 * i as u64, HHDM_OFFSET + at) };
            }
            self.answer(
                p::MODULE,
                p::ModuleResponse {
                    revision: 0,
                    module_count: count as u64,
                    modules: HHDM_OFFSET + list,
                },
            );
        }
    }

    /// The memory map response, last, once nothing else will be allocated. Returns the number
    /// of entries.
    fn memory_map(&mut self, firmware: &FirmwareMap) -> usize {
        let Some(request) = self.kernel.request(p::MEMORY_MAP) else {
            return 0;
        };
        let bound = memmap::memory_map_bound(firmware.len(), memmap::MAX_CLAIMS);
        let entries =
            self.arena
                .reserve(self.alloc, (bound * size_of::<p::MemmapEntry>()) as u64, 8);
        let list = self.arena.reserve(self.alloc, 8 * bound as u64, 8);
        let response = self
            .arena
            .reserve(self.alloc, size_of::<p::MemmapResponse>() as u64, 8);
        // No allocation from here on: the claims are final.
        // SAFETY: `entries` holds `bound` entries, reserved above and ours.
        let slots =
            unsafe { core::slice::from_raw_parts_mut(phys::ptr::<p::MemmapEntry>(entries), bound) };
        let count = memmap::build_memory_map(firmware, self.alloc.claims(), slots)
            .or_fail("building the memory map");
        for i in 0..count as u64 {
            // SAFETY: inside the list reserved above.
            unsafe { phys::write(list + 8 * i, HHDM_OFFSET + entries + 24 * i) };
        }
        let value = p::MemmapResponse {
            revision: 0,
            entry_count: count as u64,
            entries: HHDM_OFFSET + list,
        };
        // SAFETY: reserved above, aligned.
        unsafe { phys::write(response, value) };
        self.kernel.respond(request, response);
        count
    }

    /// Starts every AP the MADT lists and answers the MP request. Returns (CPUs up, CPUs
    /// listed), or `None` when there is no MP response (no APIC or no MADT, as in Limine).
    fn start_cpus(
        &mut self,
        request: Request,
        acpi_tables: &AcpiTables,
        features: &cpu::Features,
        space: &AddressSpace,
        stack_size: u64,
    ) -> Option<(usize, usize)> {
        if !features.apic {
            say!("no local APIC: no MP response");
            return None;
        }
        let Some(madt) = acpi_tables.find(b"APIC") else {
            say!("no ACPI MADT: no MP response");
            return None;
        };
        let wants_x2apic =
            self.kernel.field(request, p::REQUEST_FIELDS).unwrap_or(0) & p::MP_REQUEST_X2APIC != 0;
        let mut apic = lapic::Lapic::current();
        if wants_x2apic
            && matches!(apic, lapic::Lapic::X { .. })
            && x2apic_allowed(features, acpi_tables)
        {
            apic = lapic::Lapic::enable_x2apic();
        }
        let x2apic = matches!(apic, lapic::Lapic::X2);
        let bsp_id = apic.id();
        let mut cpus = acpi::cpus(acpi::madt_entries(&madt), x2apic, bsp_id);
        if !cpus.iter().any(|c| c.is_bsp) {
            let _ = cpus.insert(
                0,
                acpi::Cpu {
                    uid: 0,
                    apic_id: bsp_id,
                    is_bsp: true,
                },
            );
        }

        // The trampoline finds its slot by APIC ID: a table up to the highest ID started.
        let slot_count = cpus.iter().map(|c| c.apic_id as u64 + 1).max().unwrap_or(1);
        if slot_count > MAX_SLOT_TABLE {
            say!(
                "APIC IDs up to {}: only CPUs with IDs below {MAX_SLOT_TABLE} are started",
                slot_count - 1
            );
        }
        let slot_count = slot_count.min(MAX_SLOT_TABLE);
        let n = cpus.len() as u64;
        let infos = self
            .arena
            .reserve(self.alloc, n * size_of::<p::MpInfo>() as u64, 8);
        let list = self.arena.reserve(self.alloc, 8 * n, 8);
        let aps = n - 1;
        let stacks = if aps > 0 {
            self.alloc
                .alloc(
                    aps * stack_size,
                    PAGE_SIZE,
                    MemoryType::BootloaderReclaimable,
                    ALLOC_WINDOW,
                )
                .or_fail("allocating AP stacks")
        } else {
            0
        };
        let slot_bytes = slot_count * size_of::<ApSlot>() as u64;
        let slots = self
            .alloc
            .alloc(slot_bytes, PAGE_SIZE, MemoryType::BootloaderReclaimable, ALLOC_WINDOW)
            .or_fail("allocating the AP slot table");
        // SAFETY: freshly allocated, identity-mapped, ours alone.
        unsafe { phys::bytes_mut(slots, slot_bytes as usize).fill(0) };

        // Every CPU's limine_mp_info, and each AP's slot pointing at it.
        let mut startable = 0u64;
        for (i, cpu) in cpus.iter().enumerate() {
            let info_at = infos + i as u64 * size_of::<p::MpInfo>() as u64;
            let mut info = p::MpInfo {
                processor_id: cpu.uid,
                lapic_id: cpu.apic_id,
                ..Default::default()
            };
            if !cpu.is_bsp {
                let ap_index = cpus[..i].iter().filter(|c| !c.is_bsp).count() as u64;
                info.reserved = HHDM_OFFSET + stacks + (ap_index + 1) * stack_size;
                if u64::from(cpu.apic_id) < slot_count {
                    let slot = ApSlot { info: HHDM_OFFSET + info_at, ..Default::default() };
                    // SAFETY: inside the slot table (the ID is below `slot_count`).
                    unsafe { phys::write(slots + u64::from(cpu.apic_id) * size_of::<ApSlot>() as u64, slot) };
                    startable += 1;
                }
            }
            // SAFETY: the slot is inside the reserved info array.
            unsafe { phys::write(info_at, info) };
        }
        let trampoline = if startable > 0 {
            self.prepare_trampoline(space, features, x2apic, slots, slot_count as u32)
        } else {
            None
        };
        let booted_at = |apic_id: u32| {
            slots + u64::from(apic_id) * size_of::<ApSlot>() as u64 + offset_of!(ApSlot, booted) as u64
        };
        if let Some(page) = trampoline {
            let ids = || cpus.iter().filter(|c| !c.is_bsp && u64::from(c.apic_id) < slot_count).map(|c| c.apic_id);
            start_aps(&apic, page, ids, startable as u32, booted_at);
        }

        let mut up = 0u64;
        for (i, cpu) in cpus.iter().enumerate() {
            // SAFETY: an aligned u32 inside the slot table.
            let arrived = cpu.is_bsp
                || (trampoline.is_some()
                    && u64::from(cpu.apic_id) < slot_count
                    && unsafe { phys::ptr::<u32>(booted_at(cpu.apic_id)).read_volatile() } != 0);
            if arrived {
                let info_at = infos + i as u64 * size_of::<p::MpInfo>() as u64;
                // SAFETY: inside the reserved list.
                unsafe { phys::write(list + 8 * up, HHDM_OFFSET + info_at) };
                up += 1;
            } else if trampoline.is_some() {
                say!(
                    "CPU with APIC ID {} (ACPI UID {}) did not start; it is left out",
                    cpu.apic_id,
                    cpu.uid
                );
            }
        }
        self.parked = trampoline.map(|page| Parked { page, list, count: up, bsp_id, apic });

        let response = p::MpResponse {
            revision: 0,
            flags: if x2apic { p::MP_RESPONSE_X2APIC } else { 0 },
            bsp_lapic_id: bsp_id,
            cpu_count: up,
            cpus: HHDM_OFFSET + list,
        };
        let at = self.put(response);
        self.kernel.respond(request, at);
        Some((up as usize, cpus.len()))
    }

    /// Copies the trampoline below 1 MiB and fills the parts of its data block common to all
    /// APs. Returns its physical page.
    fn prepare_trampoline(
        &mut self,
        space: &AddressSpace,
        features: &cpu::Features,
        x2apic: bool,
        slots: u64,
        slot_count: u32,
    ) -> Option<u64> {
        let code = trampoline::image();
        let page = match self.alloc.alloc(
            PAGE_SIZE,
            PAGE_SIZE,
            MemoryType::BootloaderReclaimable,
            LOW_WINDOW,
        ) {
            Ok(page) => page,
            Err(_) => {
                say!("no free page below 1 MiB for the AP trampoline: APs are not started");
                return None;
            }
        };
        // SAFETY: a fresh page below 1 MiB, mapped; the image is smaller than a page.
        unsafe { phys::bytes_mut(page, code.len()).copy_from_slice(code) };
        let mut efer = EferFlags::LONG_MODE_ENABLE;
        if features.nx {
            efer |= EferFlags::NO_EXECUTE_ENABLE;
        }
        let cr0 = Cr0Flags::PROTECTED_MODE_ENABLE
            | Cr0Flags::EXTENSION_TYPE
            | Cr0Flags::WRITE_PROTECT
            | Cr0Flags::PAGING;
        let (protected, long, nmi) = trampoline::entry_offsets();
        let data_hhdm = HHDM_OFFSET + page + trampoline::data_offset() as u64;
        let mut park_idt = [[0u64; 2]; 3];
        park_idt[NMI_VECTOR] = idt::gate(HHDM_OFFSET + page + nmi);
        let data = TrampolineData {
            apic_id_leaf: if features.topology_leaf {
                trampoline::APIC_ID_LEAF_B
            } else {
                trampoline::APIC_ID_LEAF_1
            },
            slot_count,
            slots,
            far32: FarPointer { offset: (page + protected) as u32, selector: gdt::CODE32 },
            far64: FarPointer { offset: (page + long) as u32, selector: gdt::CODE64 },
            idtr_park: Pointer64 {
                limit: (size_of::<[[u64; 2]; 3]>() - 1) as u16,
                base: data_hhdm + offset_of!(TrampolineData, park_idt) as u64,
            },
            park_idt,
            idtr_null: Pointer32 { limit: 0, base: 0 },
            gdtr_phys: Pointer32 {
                limit: gdt::GDT_LIMIT,
                base: gdt::gdt_phys() as u32,
            },
            cr3: space.pml4 as u32,
            efer: efer.bits() as u32,
            cr0: cr0.bits() as u32,
            gdtr_hhdm: Pointer64 {
                limit: gdt::GDT_LIMIT,
                base: gdt::gdt_phys() + HHDM_OFFSET,
            },
            hhdm: HHDM_OFFSET,
            prepare: trampoline::ap_prepare as *const () as u64,
            ..Default::default()
        };
        // SAFETY: the data block lies inside the copied image; it is packed (align 1).
        unsafe {
            phys::ptr::<TrampolineData>(page + trampoline::data_offset() as u64)
                .write_unaligned(data)
        };
        let mtrrs = features.mtrr.then(cpu::Mtrrs::save);
        // SAFETY: no AP has been started yet.
        unsafe {
            AP_SETUP.set(ApSetup {
                pat: features.pat,
                mtrrs,
                x2apic,
            })
        };
        Some(page)
    }
}

/// x2APIC may be enabled if the CPU has it and firmware did not opt out.
fn x2apic_allowed(features: &cpu::Features, acpi_tables: &AcpiTables) -> bool {
    let opted_out = acpi_tables
        .find(b"DMAR")
        .is_some_and(|t| acpi::dmar_opts_out_of_x2apic(&t));
    features.x2apic && !opted_out
}

/// Starts the APs with `ids` all at once: INIT to each, 10 ms, STARTUP to each, a second
/// STARTUP to those not parked after 1 ms (Intel SDM Vol. 3A, 9.4.4.1), then waits until all
/// `count` parked or the time is up. APs that did not park are sent INIT again (back to
/// wait-for-SIPI), so none can wake later on stale data.
fn start_aps<I: Iterator<Item = u32>>(
    apic: &lapic::Lapic,
    page: u64,
    ids: impl Fn() -> I,
    count: u32,
    booted_at: impl Fn(u32) -> u64,
) {
    let arrived_at = page + trampoline::data_offset() as u64 + offset_of!(TrampolineData, arrived) as u64;
    // SAFETY: an aligned u32 in the trampoline's data block (checked below), which APs only
    // increment with LOCK INC.
    let arrived = || unsafe { phys::ptr::<u32>(arrived_at).read_volatile() };
    // SAFETY: an aligned u32 inside the slot table.
    let booted = |id: u32| unsafe { phys::ptr::<u32>(booted_at(id)).read_volatile() } != 0;
    fence(Ordering::SeqCst);
    for id in ids() {
        apic.send_init(id);
    }
    pit::delay(10_000);
    for id in ids() {
        apic.send_startup(id, page);
    }
    if !pit::wait_until(1_000, || arrived() == count) {
        for id in ids().filter(|&id| !booted(id)) {
            apic.send_startup(id, page);
        }
    }
    let deadline = AP_TIMEOUT_US + u64::from(count) * AP_TIMEOUT_PER_CPU_US;
    if !pit::wait_until(deadline, || arrived() == count) {
        for id in ids().filter(|&id| !booted(id)) {
            apic.send_init(id);
        }
    }
}

const _: () = assert!(offset_of!(TrampolineData, arrived) % 4 == 0);
const _: () = assert!(offset_of!(ApSlot, booted) % 4 == 0);

/// The APs parked in the trampoline (halted) and how to wake them for the hand-off.
struct Parked {
    page: u64,
    /// The MP response's list of `limine_mp_info` pointers, and its length.
    list: u64,
    count: u64,
    bsp_id: u32,
    apic: lapic::Lapic,
}

impl Parked {
    /// Sets `wake` and sends every parked AP an NMI: from now on they poll `goto_address`.
    fn wake(&self) {
        let wake_at = self.page + trampoline::data_offset() as u64 + offset_of!(TrampolineData, wake) as u64;
        // SAFETY: an aligned u32 in the data block; the APs only read it.
        unsafe { phys::ptr::<u32>(wake_at).write_volatile(1) };
        // The store must be visible before any NMI lands (WRMSR to the x2APIC ICR does not
        // order it, SDM Vol. 3A 11.12.3).
        fence(Ordering::SeqCst);
        for i in 0..self.count {
            // SAFETY: the list holds `count` HHDM pointers to filled limine_mp_info entries.
            let info: p::MpInfo = unsafe {
                let at = phys::read::<u64>(self.list + 8 * i) - HHDM_OFFSET;
                phys::read(at)
            };
            if info.lapic_id != self.bsp_id {
                self.apic.send_nmi(info.lapic_id);
            }
        }
    }
}

const _: () = assert!(offset_of!(TrampolineData, wake) % 4 == 0);

/// Masks the legacy PICs and every I/O APIC redirection entry with fixed or lowest-priority
/// delivery (PROTOCOL.md, Machine State at Entry).
fn mask_legacy_interrupts(acpi_tables: &AcpiTables) {
    // SAFETY: writing the PIC data ports only changes their interrupt masks.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    let Some(madt) = acpi_tables.find(b"APIC") else {
        return;
    };
    for entry in acpi::madt_entries(&madt) {
        let MadtEntry::IoApic { address, .. } = entry else {
            continue;
        };
        let base = u64::from(address);
        // SAFETY: IOREGSEL/IOWIN of an I/O APIC the MADT lists (82093AA datasheet, 3.0),
        // mapped by the direct map; only mask bits change.
        unsafe {
            let read = |reg: u32| {
                phys::write::<u32>(base, reg);
                phys::read::<u32>(base + 0x10)
            };
            let max_entry = (read(1) >> 16) & 0xff;
            for i in 0..=max_entry {
                let reg = 0x10 + 2 * i;
                let low = read(reg);
                let delivery = (low >> 8) & 0b111;
                if delivery <= 1 {
                    phys::write::<u32>(base, reg);
                    phys::write::<u32>(base + 0x10, low | (1 << 16));
                }
            }
        }
    }
}

/// Marks the base revision tag: its 3rd word becomes 0 if the requested revision is
/// supported, and its 2nd word the revision actually used (PROTOCOL.md, Base Revisions).
fn write_base_revision(kernel: &Kernel) {
    let Some(tag) = kernel.scan.base_revision else {
        return;
    };
    // SAFETY: the tag lies inside the loaded image (the scan read its three words).
    unsafe {
        phys::write(kernel.block + tag.offset as u64 + 8, tag.loaded());
        if tag.supported() {
            phys::write(kernel.block + tag.offset as u64 + 16, 0u64);
        }
    }
}
