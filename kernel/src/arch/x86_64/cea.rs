//! The per-CPU entry area (CEA): everything event entry needs, at a fixed virtual address per
//! CPU (seed 000: Linux's `cpu_entry_area`).
//!
//! `CpuEntryArea` is a layout, never instantiated: it says where each part sits inside a CPU's
//! slot at `CEA_BASE + index * CEA_STRIDE`. Each CPU maps the parts of its own slot during its
//! own bring-up. Guard pages are left unmapped, so every stack overflow faults on the page
//! below the stack instead of running into a neighbour; such a fault ends on the #DF stack
//! (its own IST slot), which reports it.

use core::mem::{offset_of, size_of};
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, FS, GS, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::SegmentSelector;

use super::gdt::{self, Gdt};
use super::paging::{self, Mapping};
use super::percpu::PerCpu;
use super::tss::{self, TssPage};
use crate::mm::kvm::{KernelStack, CEA_BASE};

pub const PAGE: usize = 4096;

#[repr(C, align(4096))]
pub struct Page([u8; PAGE]);

#[repr(C, align(4096))]
pub struct Stack<const PAGES: usize>([[u8; PAGE]; PAGES]);

pub const IST_STACK_PAGES: usize = 4;
pub const IST_MAIN_STACK_PAGES: usize = 4;
pub const DF_STACK_PAGES: usize = 2;
pub const FRED_STACK_PAGES: usize = 4;

#[repr(C)]
pub struct CpuEntryArea {
    /// `PerCpu`, reached through GS.
    pub percpu: Page,
    pub gdt: Page,
    pub tss: TssPage,
    /// Reserved for this CPU's alias of the SYSCALL trampoline (IST backend); mapped by the
    /// SYSCALL entry code when it is installed.
    pub syscall_trampoline: Page,
    pub entry_stack_guard: Page,
    pub entry_stack: Stack<1>,
    pub nmi_stack_guard: Page,
    pub nmi_stack: Stack<IST_STACK_PAGES>,
    pub db_stack_guard: Page,
    pub db_stack: Stack<IST_STACK_PAGES>,
    pub mc_stack_guard: Page,
    pub mc_stack: Stack<IST_STACK_PAGES>,
    pub ist_main_stack_guard: Page,
    pub ist_main_stack: Stack<IST_MAIN_STACK_PAGES>,
    pub df_stack_guard: Page,
    pub df_stack: Stack<DF_STACK_PAGES>,
    pub fred_level1_stack_guard: Page,
    pub fred_level1_stack: Stack<FRED_STACK_PAGES>,
    pub fred_level2_stack_guard: Page,
    pub fred_level2_stack: Stack<FRED_STACK_PAGES>,
    pub fred_level3_stack_guard: Page,
    pub fred_level3_stack: Stack<FRED_STACK_PAGES>,
}

/// Each CPU's slot; the space after the layout stays unmapped.
pub const CEA_STRIDE: u64 = 512 * 1024;
const _: () = assert!(size_of::<CpuEntryArea>() as u64 <= CEA_STRIDE);
const _: () = assert!(size_of::<PerCpu>() <= size_of::<Page>());
const _: () = assert!(size_of::<Gdt>() <= size_of::<Page>());

/// One mapped part of the area.
struct Part {
    name: &'static str,
    offset: usize,
    len: usize,
}

macro_rules! part {
    ($field:ident, $ty:ty) => {
        Part { name: stringify!($field), offset: offset_of!(CpuEntryArea, $field), len: size_of::<$ty>() }
    };
}

/// Every mapped part; whatever is not listed (guards, the trampoline slot) stays unmapped.
const MAPPED: [Part; 13] = [
    part!(percpu, Page),
    part!(gdt, Page),
    part!(tss, TssPage),
    part!(entry_stack, Stack<1>),
    part!(nmi_stack, Stack<IST_STACK_PAGES>),
    part!(db_stack, Stack<IST_STACK_PAGES>),
    part!(mc_stack, Stack<IST_STACK_PAGES>),
    part!(ist_main_stack, Stack<IST_MAIN_STACK_PAGES>),
    part!(df_stack, Stack<DF_STACK_PAGES>),
    part!(fred_level1_stack, Stack<FRED_STACK_PAGES>),
    part!(fred_level2_stack, Stack<FRED_STACK_PAGES>),
    part!(fred_level3_stack, Stack<FRED_STACK_PAGES>),
    part!(syscall_trampoline, Page),
];
/// `syscall_trampoline` is the last entry and is not mapped here.
const MAPPED_NOW: usize = MAPPED.len() - 1;

pub fn area_base(cpu_index: usize) -> u64 {
    CEA_BASE + cpu_index as u64 * CEA_STRIDE
}

/// The top (initial RSP) of a stack field at `offset` with `len` bytes in CPU `cpu`'s area.
const fn top(base: u64, offset: usize, len: usize) -> u64 {
    base + (offset + len) as u64
}

/// Stack tops of this CPU's area, as the TSS and the FRED MSRs need them.
#[derive(Clone, Copy, Debug)]
pub struct StackTops {
    pub entry: u64,
    pub nmi: u64,
    pub db: u64,
    pub mc: u64,
    pub ist_main: u64,
    pub df: u64,
    pub fred: [u64; 3],
}

pub fn stack_tops(cpu_index: usize) -> StackTops {
    let b = area_base(cpu_index);
    macro_rules! t {
        ($f:ident, $ty:ty) => {
            top(b, offset_of!(CpuEntryArea, $f), size_of::<$ty>())
        };
    }
    StackTops {
        entry: t!(entry_stack, Stack<1>),
        nmi: t!(nmi_stack, Stack<IST_STACK_PAGES>),
        db: t!(db_stack, Stack<IST_STACK_PAGES>),
        mc: t!(mc_stack, Stack<IST_STACK_PAGES>),
        ist_main: t!(ist_main_stack, Stack<IST_MAIN_STACK_PAGES>),
        df: t!(df_stack, Stack<DF_STACK_PAGES>),
        fred: [
            t!(fred_level1_stack, Stack<FRED_STACK_PAGES>),
            t!(fred_level2_stack, Stack<FRED_STACK_PAGES>),
            t!(fred_level3_stack, Stack<FRED_STACK_PAGES>),
        ],
    }
}

/// Which guard page of CPU `cpu_index`'s area, if any, contains `addr`.
pub fn guard_containing(cpu_index: usize, addr: u64) -> Option<&'static str> {
    let b = area_base(cpu_index);
    let guards = [
        ("entry stack", offset_of!(CpuEntryArea, entry_stack_guard)),
        ("NMI stack", offset_of!(CpuEntryArea, nmi_stack_guard)),
        ("#DB stack", offset_of!(CpuEntryArea, db_stack_guard)),
        ("#MC stack", offset_of!(CpuEntryArea, mc_stack_guard)),
        ("IST main stack", offset_of!(CpuEntryArea, ist_main_stack_guard)),
        ("#DF stack", offset_of!(CpuEntryArea, df_stack_guard)),
        ("FRED level-1 stack", offset_of!(CpuEntryArea, fred_level1_stack_guard)),
        ("FRED level-2 stack", offset_of!(CpuEntryArea, fred_level2_stack_guard)),
        ("FRED level-3 stack", offset_of!(CpuEntryArea, fred_level3_stack_guard)),
    ];
    guards.iter().find(|(_, off)| (b + *off as u64..b + (*off + PAGE) as u64).contains(&addr)).map(|(n, _)| *n)
}

fn tss_of(cpu_index: usize) -> *mut TssPage {
    (area_base(cpu_index) + offset_of!(CpuEntryArea, tss) as u64) as *mut TssPage
}

/// Sets TSS.RSP0, the stack a ring-3 interrupt or exception switches to, on CPU `cpu_index`
/// (which must be the caller's: only the running CPU changes its own TSS).
#[inline]
pub fn set_rsp0(cpu_index: usize, top: u64) {
    // SAFETY: the TSS is mapped for the CPU's lifetime; the CPU reads RSP0 only on event
    // delivery, which cannot interleave with this store on the same CPU in a way that matters:
    // callers run with interrupts disabled.
    unsafe { (*tss_of(cpu_index)).tss.privilege_stack_table[0] = x86_64::VirtAddr::new(top) };
}

/// The I/O ports open in each CPU's TSS bitmap, and whose they are (pid; 0: nobody's).
static IO_LOADED: [spin::Mutex<(u64, alloc::vec::Vec<(u16, u16)>)>; super::smp::MAX_CPUS] =
    [const { spin::Mutex::new((0, alloc::vec::Vec::new())) }; super::smp::MAX_CPUS];

/// Whether CPU `cpu_index`'s I/O bitmap opens any port (kept with `IO_LOADED`, readable
/// without its lock).
static IO_OPEN: [core::sync::atomic::AtomicBool; super::smp::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; super::smp::MAX_CPUS];

/// No port is open in CPU `cpu_index`'s I/O bitmap.
#[inline]
pub fn io_bitmap_closed(cpu_index: usize) -> bool {
    !IO_OPEN[cpu_index].load(core::sync::atomic::Ordering::Acquire)
}

/// Opens exactly `ports` (base, length) in CPU `cpu_index`'s I/O bitmap for process `pid`,
/// closing those of the process that had it before. Only the running CPU changes its own
/// bitmap, with interrupts off (the context switch).
pub fn load_io_ports(cpu_index: usize, pid: u64, ports: &[(u16, u16)]) {
    let mut loaded = IO_LOADED[cpu_index].lock();
    if loaded.0 == pid && loaded.1 == ports {
        return;
    }
    if loaded.1.is_empty() && ports.is_empty() {
        loaded.0 = pid;
        return;
    }
    // SAFETY: the TSS page is mapped for the CPU's lifetime and only this CPU writes its
    // bitmap (with interrupts off); the CPU reads it only for IN/OUT in ring 3, which cannot
    // run on this CPU while we are in the kernel.
    let bitmap = unsafe { &mut (*tss_of(cpu_index)).io_bitmap };
    let mut set = |(base, len): (u16, u16), allow: bool| {
        for port in base as usize..(base as usize + len as usize).min(65536) {
            if allow {
                bitmap[port / 8] &= !(1 << (port % 8));
            } else {
                bitmap[port / 8] |= 1 << (port % 8);
            }
        }
    };
    for &r in loaded.1.iter() {
        set(r, false);
    }
    for &r in ports {
        set(r, true);
    }
    loaded.0 = pid;
    loaded.1.clear();
    loaded.1.extend_from_slice(ports);
    IO_OPEN[cpu_index].store(!ports.is_empty(), core::sync::atomic::Ordering::Release);
}

/// Where this CPU's alias of the SYSCALL trampoline lives.
pub fn syscall_trampoline_alias(cpu_index: usize) -> u64 {
    area_base(cpu_index) + offset_of!(CpuEntryArea, syscall_trampoline) as u64
}

/// Byte offsets inside an entry area, for the trampoline's RIP-relative addressing.
pub mod offsets {
    use super::*;
    pub const TRAMPOLINE: usize = offset_of!(CpuEntryArea, syscall_trampoline);
    /// The entry stack's top word: the trampoline's scratch slot for the user RSP.
    pub const ENTRY_STACK_SCRATCH: usize = offset_of!(CpuEntryArea, entry_stack) + size_of::<Stack<1>>() - 8;
    pub const KERNEL_STACK_TOP: usize =
        offset_of!(CpuEntryArea, percpu) + offset_of!(crate::arch::x86_64::percpu::PerCpu, kernel_stack_top);
}

/// Builds, maps and loads this CPU's entry area: run by every CPU on itself, the BSP first.
/// Returns the CPU's guarded kernel stack, which the caller switches to.
pub fn bring_up(cpu_index: usize, lapic_id: u32) -> KernelStack {
    let base = area_base(cpu_index);
    for p in &MAPPED[..MAPPED_NOW] {
        paging::map_fresh(base + p.offset as u64, p.len as u64, Mapping::KernelData)
            .unwrap_or_else(|e| panic!("cpu {cpu_index}: cannot map entry-area part {}: {e:?}", p.name));
    }
    let stack = KernelStack::allocate().expect("cannot allocate a kernel stack");
    let tops = stack_tops(cpu_index);

    // SAFETY: the parts were just mapped for this CPU alone and are zeroed; they stay mapped
    // for the CPU's lifetime, which makes the 'static references sound.
    let (tss, gdt): (&'static mut TssPage, &'static mut Gdt) = unsafe {
        (
            &mut *((base + offset_of!(CpuEntryArea, tss) as u64) as *mut TssPage),
            &mut *((base + offset_of!(CpuEntryArea, gdt) as u64) as *mut Gdt),
        )
    };
    tss.init(
        [(tss::IST_NMI, tops.nmi), (tss::IST_DB, tops.db), (tss::IST_MC, tops.mc), (tss::IST_DF, tops.df)],
        stack.top,
    );
    let tss: &'static TssPage = tss;
    *gdt = gdt::build(tss);
    let gdt: &'static Gdt = gdt;
    gdt.load();
    // SAFETY: the selectors name the descriptors `gdt::build` just placed in the loaded GDT;
    // the TSS descriptor is loaded once per CPU (LTR marks it busy).
    unsafe {
        CS::set_reg(gdt::KERNEL_CS);
        SS::set_reg(gdt::KERNEL_SS);
        for null in [DS::set_reg, ES::set_reg, FS::set_reg, GS::set_reg] {
            null(SegmentSelector::NULL);
        }
        load_tss(gdt::TSS);
    }
    // After the GS selector load (which clears the base), point GS at the per-CPU page.
    // SAFETY: the per-CPU page is mapped, zeroed and this CPU's alone.
    unsafe {
        PerCpu::install(
            (base + offset_of!(CpuEntryArea, percpu) as u64) as *mut PerCpu,
            cpu_index,
            lapic_id,
            (stack.bottom, stack.top),
        )
    };
    super::entry::init_this_cpu(cpu_index);
    log::info!("cpu {cpu_index}: entry area at {base:#x} ({})", super::entry::backend().name());
    stack
}
