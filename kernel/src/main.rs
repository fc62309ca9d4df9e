//! Entry points: the BSP's, from the bootloader; the APs' are in `arch::x86_64::smp`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs on x86_64-unknown-none: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod bsp {
    use spin::Once;

    use kernel::arch::x86_64::{acpi, apic, cea, cpu, entry, paging, run_on_stack, smp};
    use kernel::boot::{self, BootInfo};
    use kernel::cmdline::Cmdline;
    #[cfg(feature = "testing")]
    use kernel::testing::harness::{self, Verdict};
    use kernel::mm::{heap, phys};
    use kernel::{klog, println};

    struct Boot {
        test: Option<&'static str>,
        cpus_found: usize,
        cmd: Cmdline<'static>,
    }

    static BOOT: Once<Boot> = Once::new();

    /// The ELF entry point; the bootloader jumps here on the BSP with its own page tables and
    /// a 64 KiB stack.
    #[no_mangle]
    extern "C" fn kernel_bsp_entry() -> ! {
        smp::boot_clock::stamp(&smp::boot_clock::KERNEL_ENTRY);
        klog::init();
        // Out of the bootloader's spin loops before anything else: a spinning AP is a host
        // thread that never sleeps under an emulator (see `ap_park`).
        let (bsp_lapic_id, _, mp_cpus) = boot::mp().unwrap_or((0, false, &[]));
        let parked = smp::park_aps(mp_cpus, bsp_lapic_id);
        let info = BootInfo::from_bootloader().unwrap_or_else(|e| panic!("cannot boot: {e}"));
        log::info!(
            "booted by {} {} (Limine base revision {}), command line {:?}; {parked} APs parked",
            info.bootloader.0,
            info.bootloader.1,
            info.revision,
            info.cmdline
        );
        let cmd = Cmdline::parse(info.cmdline, |w| log::warn!("ignoring unknown command-line word {w:?}"))
            .unwrap_or_else(|e| panic!("bad kernel command line: {e:?}"));
        #[cfg(feature = "testing")]
        if let Some(name) = cmd.test {
            harness::set_scenario(name);
        }
        #[cfg(not(feature = "testing"))]
        if let Some(name) = cmd.test {
            log::error!("test={name} ignored: this kernel is built without scenarios (cargo feature `testing`)");
        }
        #[cfg(not(feature = "testing"))]
        let cmd = cmd.without_test();

        let features = cpu::Features::read();
        log::info!("cpu features: {}", features.report());
        cpu::enable_protections(&features);
        kernel::arch::x86_64::fpu::init_this_cpu();
        log::info!("FPU: {}", kernel::arch::x86_64::fpu::describe(&kernel::arch::x86_64::fpu::config()));
        kernel::syscall::uaccess::init(features.smap);
        phys::init(&info);
        paging::init(&info);
        heap::init(phys::usable_bytes());
        for m in info.modules {
            log::info!("module {:?} ({} bytes) {:?}", m.path(), m.size(), m.string());
        }

        let platform = match info.rsdp_phys {
            Some(rsdp) => acpi::read_platform(rsdp).unwrap_or_else(|e| {
                log::error!("ACPI tables unreadable ({e:?}); trusting the bootloader's CPU list");
                Default::default()
            }),
            None => {
                log::error!("no RSDP from the bootloader; trusting its CPU list");
                Default::default()
            }
        };
        let (bsp_lapic_id, x2apic_by_loader, mp_cpus) = boot::mp().unwrap_or((0, false, &[]));
        let cpus_found = if platform.cpus.is_empty() { mp_cpus.len().max(1) } else { platform.cpus.len() };
        log::info!(
            "ACPI: {} CPUs (APIC IDs {}), {} I/O APICs (id, address) {:x?}; bootloader x2APIC: {}",
            platform.cpus.len(),
            kernel::arch::x86_64::id_ranges::IdRanges(&platform.cpus.iter().map(|c| c.apic_id).collect::<alloc::vec::Vec<_>>()),
            platform.io_apics.len(),
            platform.io_apics.iter().map(|a| (a.id, a.address)).collect::<alloc::vec::Vec<_>>(),
            x2apic_by_loader
        );

        kernel::arch::x86_64::ioapic::init(&platform);
        entry::select(cmd.entry, &features);
        kernel::arch::x86_64::user_segments::init(features.lkgs, features.fsgsbase);
        BOOT.call_once(|| Boot { test: cmd.test, cpus_found, cmd });
        let stack = cea::bring_up(0, bsp_lapic_id);
        smp::set_features(features);
        run_on_stack(stack.top, bsp_main, 0)
    }

    extern crate alloc;

    extern "C" fn bsp_main(_: usize) -> ! {
        let boot = BOOT.get().expect("boot state");
        apic::init_bsp();
        smp::bsp_online();
        x86_64::instructions::interrupts::enable();
        let (bsp_lapic_id, _, mp_cpus) = boot::mp().unwrap_or((0, false, &[]));
        let aps = smp::start_aps(mp_cpus, bsp_lapic_id, 5 * apic::TIMER_HZ);
        log::info!("{aps} APs online; {} frames free", phys::free_frames());
        // The servers run in an ordinary boot and in the scenarios that test them.
        let servers = match boot.test {
            None | Some("servers" | "server_crash" | "fuzz" | "memory") => start_init(boot.test.unwrap_or(""), &boot.cmd),
            Some(_) => "",
        };
        println!(
            "READY cpus={}/{} entry={} servers={servers}",
            smp::online(),
            boot.cpus_found,
            entry::backend().name()
        );
        smp::boot_clock::stamp(&smp::boot_clock::READY);
        #[cfg(feature = "testing")]
        if let Some(name) = boot.test {
            kernel::testing::scenario::run(name)
        }
        smp::idle()
    }

    /// Starts the root task, the `init` boot module, with its command line from limine.cfg
    /// (plus `test=NAME` and the scenario's own words in a scenario) and its initial
    /// capabilities, and waits up to 20 s for it to report its servers up. Returns READY's
    /// server list.
    fn start_init(test: &str, cmd: &Cmdline<'static>) -> &'static str {
        let Some(image) = boot::module("init") else {
            log::warn!("no init module in limine.cfg: nothing to run in user space");
            return "";
        };
        let arg = match test {
            "" => alloc::string::String::from(boot::module_cmdline("init")),
            t => cmd.scenario_words().fold(alloc::format!("{} test={t}", boot::module_cmdline("init")), |a, w| a + " " + w),
        };
        let caps = kernel::syscall::ipc::init_caps();
        match kernel::sched::Process::spawn_with("init", image, &arg, caps, None, kernel::mm::account::root().clone()) {
            Ok(p) => kernel::syscall::ipc::set_init_process(p),
            Err(e) => {
                log::error!("cannot start init: {e}");
                return "";
            }
        }
        kernel::syscall::ipc::wait_servers_ready(20 * apic::TIMER_HZ).unwrap_or_else(|| {
            log::error!("init did not report its servers up within 20 s");
            ""
        })
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        kernel::klog::take_over(false);
        log::error!("PANIC: {info}");
        // Where was everybody else? Then stop them, so nothing runs on after the kernel broke.
        if smp::online() > 1 {
            smp::backtrace_others(50_000_000);
            smp::nmi_others(smp::NMI_STOP);
        }
        #[cfg(feature = "testing")]
        if harness::scenario().is_some() {
            harness::finish(Verdict::Fail(format_args!("kernel panic: {}", info.message())));
        }
        kernel::arch::x86_64::halt_forever()
    }
}
