//! `limine-bridge`: see boot/README.md.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod arch;

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    arch::serial::line(format_args!("internal error: {info}"));
    arch::halt()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("limine-bridge is a Multiboot2 image: build it with --target x86_64-unknown-none");
}
