//! The GRUB contract: what each Multiboot2 module string means.
//!
//! `grub.cfg` (written by xtask) loads every file with
//! `module2 <file> <role> <limine-path> <command line...>`, so GRUB hands us the string
//! `<role> <limine-path> <command line...>`:
//! - `role` is `kernel` (exactly one module) or `module` (zero or more, kept in order);
//! - `limine-path` is the path as `limine.conf` names it, without spaces, e.g.
//!   `boot():/boot/init`;
//! - everything after the second space is the command line, verbatim (possibly empty).
//!
//! Limine reports `struct limine_file.path` as the path *within the volume*, with a leading
//! slash (`/boot/init`), so the resource part (`boot():`) is dropped; the old `boot:///path`
//! form and a bare `/path` are accepted too.

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Kernel,
    Module,
}

/// One parsed module string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSpec<'a> {
    pub role: Role,
    /// The path as written in the string, e.g. `boot():/boot/init`.
    pub uri: &'a [u8],
    /// The path within the volume, e.g. `/boot/init` (see [`ModuleSpec::needs_leading_slash`]).
    pub path: &'a [u8],
    /// The command line (may be empty).
    pub cmdline: &'a [u8],
}

impl ModuleSpec<'_> {
    /// Whether the reported path must get a `/` in front of [`ModuleSpec::path`], as Limine
    /// adds one to volume paths that lack it.
    pub fn needs_leading_slash(&self) -> bool {
        self.path.first() != Some(&b'/')
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleStringError<'a> {
    /// The string is empty.
    Empty,
    /// The first word is neither `kernel` nor `module`.
    UnknownRole(&'a [u8]),
    /// No path after the role.
    MissingPath,
    /// The path is not `resource(root):/path`, `resource:///path` or `/path`.
    BadPath(&'a [u8]),
}

/// Bytes shown in an error line: printable ASCII as is, anything else as `?`.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}

impl fmt::Display for ModuleStringError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(
                f,
                "empty module string (expected `<kernel|module> <path> [cmdline]`)"
            ),
            Self::UnknownRole(r) => {
                write!(
                    f,
                    "unknown module role `{}` (expected `kernel` or `module`)",
                    Printable(r)
                )
            }
            Self::MissingPath => write!(f, "module string has a role but no path"),
            Self::BadPath(p) => write!(
                f,
                "bad module path `{}` (expected e.g. `boot():/boot/init`)",
                Printable(p)
            ),
        }
    }
}

fn split_once(bytes: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == sep) {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The volume path of a Limine path.
fn volume_path(uri: &[u8]) -> Option<&[u8]> {
    let path = if let Some(i) = find(uri, b"):") {
        &uri[i + 2..]
    } else if let Some(i) = find(uri, b"://") {
        &uri[i + 3..]
    } else if uri.first() == Some(&b'/') {
        uri
    } else {
        return None;
    };
    (!path.is_empty() && path != b"/").then_some(path)
}

/// Parses one module string per the GRUB contract.
pub fn parse(string: &[u8]) -> Result<ModuleSpec<'_>, ModuleStringError<'_>> {
    if string.is_empty() {
        return Err(ModuleStringError::Empty);
    }
    let (role, rest) = split_once(string, b' ');
    let role = match role {
        b"kernel" => Role::Kernel,
        b"module" => Role::Module,
        other => return Err(ModuleStringError::UnknownRole(other)),
    };
    let rest = rest.ok_or(ModuleStringError::MissingPath)?;
    let (uri, cmdline) = split_once(rest, b' ');
    if uri.is_empty() {
        return Err(ModuleStringError::MissingPath);
    }
    let path = volume_path(uri).ok_or(ModuleStringError::BadPath(uri))?;
    Ok(ModuleSpec {
        role,
        uri,
        path,
        cmdline: cmdline.unwrap_or(&[]),
    })
}

/// Where the kernel and the modules are among GRUB's modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSetError {
    NoKernel,
    DuplicateKernel { first: usize, second: usize },
}

impl fmt::Display for ModuleSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoKernel => write!(
                f,
                "no kernel: expected one `module2 <file> kernel <path> [cmdline]` line"
            ),
            Self::DuplicateKernel { first, second } => write!(
                f,
                "GRUB modules {first} and {second} are both marked `kernel`; exactly one may be"
            ),
        }
    }
}

/// Finds the one kernel among the roles, in GRUB module order.
pub fn find_kernel(roles: impl Iterator<Item = Role>) -> Result<usize, ModuleSetError> {
    let mut kernel = None;
    for (i, role) in roles.enumerate() {
        if role == Role::Kernel {
            if let Some(first) = kernel {
                return Err(ModuleSetError::DuplicateKernel { first, second: i });
            }
            kernel = Some(i);
        }
    }
    kernel.ok_or(ModuleSetError::NoKernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_string_with_command_line_splits_at_the_first_two_spaces() {
        let spec = parse(b"kernel boot():/boot/kernel console=com1 smp=4").unwrap();
        assert_eq!(spec.role, Role::Kernel);
        assert_eq!(spec.uri, b"boot():/boot/kernel");
        assert_eq!(spec.path, b"/boot/kernel");
        assert_eq!(spec.cmdline, b"console=com1 smp=4");
        assert!(!spec.needs_leading_slash());
    }

    #[test]
    fn missing_command_line_is_empty() {
        let spec = parse(b"module boot():/boot/init").unwrap();
        assert_eq!(spec.role, Role::Module);
        assert_eq!(spec.cmdline, b"");
    }

    #[test]
    fn command_line_is_kept_verbatim_including_extra_spaces() {
        let spec = parse(b"module boot():/boot/init  two  spaces ").unwrap();
        assert_eq!(spec.cmdline, b" two  spaces ");
        let spec = parse(b"module boot():/boot/init ").unwrap();
        assert_eq!(spec.cmdline, b"");
    }

    #[test]
    fn limine_path_forms_report_the_volume_path() {
        assert_eq!(parse(b"module hdd(1):/srv/a").unwrap().path, b"/srv/a");
        assert_eq!(
            parse(b"module boot:///boot/init").unwrap().path,
            b"/boot/init"
        );
        assert_eq!(parse(b"module /boot/init").unwrap().path, b"/boot/init");
        let spec = parse(b"module boot():boot/init").unwrap();
        assert_eq!(spec.path, b"boot/init");
        assert!(spec.needs_leading_slash());
    }

    #[test]
    fn unknown_role_is_rejected() {
        assert_eq!(
            parse(b"kernal boot():/boot/kernel"),
            Err(ModuleStringError::UnknownRole(b"kernal"))
        );
        // A string written for plain Multiboot2 (no role) is caught, not misread.
        assert_eq!(
            parse(b"/boot/kernel"),
            Err(ModuleStringError::UnknownRole(b"/boot/kernel"))
        );
    }

    #[test]
    fn empty_string_and_missing_path_are_rejected() {
        assert_eq!(parse(b""), Err(ModuleStringError::Empty));
        assert_eq!(parse(b"kernel"), Err(ModuleStringError::MissingPath));
        assert_eq!(parse(b"kernel "), Err(ModuleStringError::MissingPath));
        assert_eq!(
            parse(b"kernel  /boot/kernel"),
            Err(ModuleStringError::MissingPath)
        );
    }

    #[test]
    fn path_without_a_volume_path_is_rejected() {
        assert_eq!(
            parse(b"module boot():"),
            Err(ModuleStringError::BadPath(b"boot():"))
        );
        assert_eq!(
            parse(b"module init"),
            Err(ModuleStringError::BadPath(b"init"))
        );
        assert_eq!(
            parse(b"module boot():/"),
            Err(ModuleStringError::BadPath(b"boot():/"))
        );
    }

    #[test]
    fn exactly_one_kernel_is_found_in_any_position() {
        use Role::*;
        assert_eq!(find_kernel([Module, Kernel, Module].into_iter()), Ok(1));
        assert_eq!(find_kernel([Kernel].into_iter()), Ok(0));
    }

    #[test]
    fn missing_or_duplicate_kernel_is_rejected() {
        use Role::*;
        assert_eq!(
            find_kernel([Module, Module].into_iter()),
            Err(ModuleSetError::NoKernel)
        );
        assert_eq!(find_kernel([].into_iter()), Err(ModuleSetError::NoKernel));
        assert_eq!(
            find_kernel([Kernel, Module, Kernel].into_iter()),
            Err(ModuleSetError::DuplicateKernel {
                first: 0,
                second: 2
            })
        );
    }

    #[test]
    fn errors_print_offending_bytes_safely() {
        let e = ModuleStringError::UnknownRole(b"k\x01x");
        assert!(e.to_string().contains("`k?x`"));
    }
}
