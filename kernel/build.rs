//! Links the kernel binary with its linker script, only for the bare-metal target: host builds
//! of the library (unit tests) link normally.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/linker.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // A section the script does not place would land outside the mapped image.
        println!("cargo:rustc-link-arg-bins=--orphan-handling=error");
    }
}
