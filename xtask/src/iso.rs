//! Bootable ISOs, cached by a hash of everything that goes into them.
//!
//! - **Bridge**: `boot/limine-bridge`, the kernel and modules at their manifest paths, and
//!   `boot/grub/grub.cfg`, made bootable by `grub-mkrescue`.
//! - **Limine**: a genuine Limine (>= 8) binary release: `boot/limine/limine.conf` and the
//!   release's BIOS and UEFI CD images, made hybrid by `xorriso`, then `limine bios-install`.
//!
//! Every test case has its own kernel command line and so its own ISO; the ISO is named
//! `target/iso/<variant>-<hash>.iso`, so identical inputs reuse the earlier one.

use crate::images::{Images, BRIDGE_BIN};
use crate::manifest::Manifest;
use crate::util::{run_captured, step, target_dir, Fnv, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many ISOs the cache keeps (the newest by use).
const CACHE_KEEP: usize = 48;
/// The files a Limine binary release must provide.
pub const LIMINE_FILES: &[&str] = &[
    "limine-bios.sys",
    "limine-bios-cd.bin",
    "limine-uefi-cd.bin",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loader {
    Bridge,
    Limine(PathBuf),
}

impl Loader {
    fn variant(&self) -> &'static str {
        match self {
            Loader::Bridge => "bridge",
            Loader::Limine(_) => "limine",
        }
    }
}

/// Checks that `dir` is a usable Limine release; the error says what it must contain.
pub fn check_limine_dir(dir: &Path) -> Result<()> {
    let what = "LIMINE_DIR (or --limine) must be a Limine >= 8 binary release: limine-bios.sys, \
                limine-bios-cd.bin, limine-uefi-cd.bin and the `limine` host tool (`make -C DIR` \
                builds it from limine.c)";
    if !dir.is_dir() {
        return Err(format!("{} is not a folder. {what}", dir.display()));
    }
    let mut missing: Vec<&str> = LIMINE_FILES
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !crate::util::is_executable(&dir.join("limine")) {
        missing.push("limine (host tool)");
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} lacks {}. {what}",
            dir.display(),
            missing.join(", ")
        ));
    }
    Ok(())
}

/// One file of the ISO: where it goes and where it comes from.
struct Staged {
    iso_path: String,
    source: PathBuf,
    /// Content hash when known (built images), else the file is hashed when staged.
    hash: Option<u64>,
    /// A built ELF image: staged without its debug sections (`objcopy --strip-debug`). The
    /// loaders read only segments, the symbols stay, and gdb reads the full file in target/.
    /// A 27 MB ISO became 10 MB, which GRUB loads 0.8 s sooner at 8 CPUs and 80 s sooner at 300
    /// under QEMU TCG.
    strip_debug: bool,
}

/// What goes into an ISO, before anything is written.
struct Plan {
    files: Vec<Staged>,
    /// Generated text files: (path in the ISO, contents).
    texts: Vec<(String, String)>,
}

fn plan(manifest: &Manifest, images: &Images, loader: &Loader) -> Result<Plan> {
    let mut files = Vec::new();
    for path in manifest.files() {
        let image = images.get(path.binary_name())?;
        files.push(Staged {
            iso_path: path.iso_path().to_string(),
            source: image.path.clone(),
            hash: Some(image.hash),
            strip_debug: true,
        });
    }
    let mut texts = Vec::new();
    match loader {
        Loader::Bridge => {
            let bridge = images.get(BRIDGE_BIN)?;
            let iso_path = format!("boot/{BRIDGE_BIN}");
            if files.iter().any(|f| f.iso_path == iso_path) {
                return Err(format!(
                    "limine.cfg loads a file at /{iso_path}, where the bridge goes"
                ));
            }
            files.push(Staged {
                iso_path: iso_path.clone(),
                source: bridge.path.clone(),
                hash: Some(bridge.hash),
                strip_debug: true,
            });
            texts.push((
                "boot/grub/grub.cfg".to_string(),
                manifest.to_grub_cfg(&format!("/{iso_path}"))?,
            ));
        }
        Loader::Limine(dir) => {
            check_limine_dir(dir)?;
            for name in LIMINE_FILES {
                files.push(Staged {
                    iso_path: format!("boot/limine/{name}"),
                    source: dir.join(name),
                    hash: None,
                    strip_debug: false,
                });
            }
            let efi = dir.join("BOOTX64.EFI");
            if efi.is_file() {
                files.push(Staged {
                    iso_path: "EFI/BOOT/BOOTX64.EFI".into(),
                    source: efi,
                    hash: None,
                    strip_debug: false,
                });
            }
            // The host tool is part of the recipe: a different release makes a different ISO.
            files.push(Staged {
                iso_path: String::new(),
                source: dir.join("limine"),
                hash: None,
                strip_debug: false,
            });
            texts.push((
                "boot/limine/limine.conf".to_string(),
                manifest.to_limine_conf(),
            ));
        }
    }
    Ok(Plan { files, texts })
}

fn cache_key(plan: &Plan, loader: &Loader) -> Result<u64> {
    let mut hash = Fnv::new();
    hash.bytes(loader.variant().as_bytes());
    for file in &plan.files {
        hash.bytes(file.iso_path.as_bytes());
        let content = match file.hash {
            Some(h) => h,
            None => {
                let bytes = fs::read(&file.source)
                    .map_err(|e| format!("cannot read {}: {e}", file.source.display()))?;
                Fnv::new().bytes(&bytes).finish()
            }
        };
        hash.bytes(&content.to_le_bytes());
        if file.strip_debug {
            hash.bytes(b"objcopy --strip-debug");
        }
    }
    for (path, text) in &plan.texts {
        hash.bytes(path.as_bytes()).bytes(text.as_bytes());
    }
    Ok(hash.finish())
}

fn stage(plan: &Plan, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    let place = |iso_path: &str| -> Result<PathBuf> {
        let dest = dir.join(iso_path);
        fs::create_dir_all(dest.parent().expect("inside the staging folder"))
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        Ok(dest)
    };
    for file in plan.files.iter().filter(|f| !f.iso_path.is_empty()) {
        let dest = place(&file.iso_path)?;
        if file.strip_debug {
            run_captured(Command::new("objcopy").arg("--strip-debug").arg(&file.source).arg(&dest))?;
            continue;
        }
        fs::copy(&file.source, &dest).map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                file.source.display(),
                dest.display()
            )
        })?;
    }
    for (iso_path, text) in &plan.texts {
        let dest = place(iso_path)?;
        fs::write(&dest, text).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(())
}

/// Builds (or finds in the cache) the ISO that boots `manifest` with `images` through `loader`.
pub fn build(manifest: &Manifest, images: &Images, loader: &Loader) -> Result<PathBuf> {
    let plan = plan(manifest, images, loader)?;
    let key = cache_key(&plan, loader)?;
    let iso_dir = target_dir().join("iso");
    fs::create_dir_all(&iso_dir)
        .map_err(|e| format!("cannot create {}: {e}", iso_dir.display()))?;
    let iso = iso_dir.join(format!("{}-{key:016x}.iso", loader.variant()));
    // One xtask at a time stages and writes ISOs (a second `cargo xtask` may run alongside).
    let lock = fs::File::create(iso_dir.join(".lock"))
        .map_err(|e| format!("cannot create the ISO lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", iso_dir.display()))?;
    if iso.is_file() {
        // Mark it as used, so pruning keeps it.
        let _ = fs::File::options()
            .append(true)
            .open(&iso)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(iso);
    }
    let staging = iso_dir.join(loader.variant());
    step(format!(
        "building {} ISO {}",
        loader.variant(),
        iso.file_name().unwrap().to_string_lossy()
    ));
    stage(&plan, &staging)?;
    let partial = iso.with_extension("iso.partial");
    match loader {
        Loader::Bridge => {
            run_captured(
                Command::new("grub-mkrescue")
                    .arg("-o")
                    .arg(&partial)
                    .arg(&staging),
            )?;
        }
        Loader::Limine(dir) => {
            run_captured(
                Command::new("xorriso")
                    .args([
                        "-as",
                        "mkisofs",
                        "-R",
                        "-r",
                        "-J",
                        "-b",
                        "boot/limine/limine-bios-cd.bin",
                    ])
                    .args([
                        "-no-emul-boot",
                        "-boot-load-size",
                        "4",
                        "-boot-info-table",
                        "-hfsplus",
                    ])
                    .args([
                        "-apm-block-size",
                        "2048",
                        "--efi-boot",
                        "boot/limine/limine-uefi-cd.bin",
                    ])
                    .args([
                        "-efi-boot-part",
                        "--efi-boot-image",
                        "--protective-msdos-label",
                    ])
                    .arg(&staging)
                    .arg("-o")
                    .arg(&partial),
            )?;
            run_captured(
                Command::new(dir.join("limine"))
                    .arg("bios-install")
                    .arg(&partial),
            )?;
        }
    }
    fs::rename(&partial, &iso).map_err(|e| format!("cannot move the ISO into place: {e}"))?;
    prune(&iso_dir);
    Ok(iso)
}

/// Keeps the [`CACHE_KEEP`] most recently used ISOs.
fn prune(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut isos: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "iso"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    isos.sort();
    let excess = isos.len().saturating_sub(CACHE_KEEP);
    for (_, path) in isos.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}
