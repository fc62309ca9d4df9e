//! Links `limine-bridge` with boot/link.ld, but only for the bare-metal target: host builds
//! (`cargo test -p bridge`) use the normal host linker setup.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if target == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg-bin=limine-bridge=-T{dir}/link.ld");
        println!("cargo:rustc-link-arg-bin=limine-bridge=--no-pie");
        println!("cargo:rustc-link-arg-bin=limine-bridge=-zmax-page-size=4096");
    }
}
