//! The build script of every user program (`build = "../build.rs"` in each Cargo.toml): links
//! the binaries with user/user.ld, only for the bare-metal target, so host builds (`cargo
//! clippy`, `cargo test`) link normally.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/../user.ld");
    println!("cargo:rerun-if-changed={script}");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{script}");
        // A section the script does not place would land outside the mapped image.
        println!("cargo:rustc-link-arg-bins=--orphan-handling=error");
    }
}
