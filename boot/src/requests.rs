//! Finding the kernel's requests and base revision tag in its loaded image.
//!
//! As Limine does (PROTOCOL.md, "Requests Delimiters" and "Base Revisions"): the image is
//! scanned on 8-byte boundaries; a start marker discards everything found before it, the first
//! end marker stops the scan; a request is anything starting with the common magic; two
//! requests with one ID, or two base revision tags, are an error.

use crate::fixed::FixedVec;
use crate::protocol::{
    RequestId, BASE_REVISION_MAGIC, COMMON_MAGIC, MAX_BASE_REVISION, REQUESTS_END_MARKER,
    REQUESTS_START_MARKER,
};
use core::fmt;

/// Most requests accepted (Limine's limit too).
pub const MAX_REQUESTS: usize = 128;

/// One request: where it is in the image and what it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub offset: usize,
    pub id: RequestId,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            offset: 0,
            id: RequestId([0, 0]),
        }
    }
}

/// The base revision tag: where it is and which revision it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRevisionTag {
    pub offset: usize,
    pub requested: u64,
}

impl BaseRevisionTag {
    /// The revision the bridge boots the kernel with: the requested one if supported, else the
    /// highest supported one (Limine 9 does the same for revisions it does not know).
    pub fn loaded(&self) -> u64 {
        self.requested.min(MAX_BASE_REVISION)
    }

    pub fn supported(&self) -> bool {
        self.requested <= MAX_BASE_REVISION
    }
}

#[derive(Debug, Default)]
pub struct Scan {
    pub base_revision: Option<BaseRevisionTag>,
    pub requests: FixedVec<Request, MAX_REQUESTS>,
}

impl Scan {
    /// The base revision the kernel is booted with (0 without a tag).
    pub fn loaded_revision(&self) -> u64 {
        self.base_revision.map_or(0, |t| t.loaded())
    }

    pub fn find(&self, id: RequestId) -> Option<Request> {
        self.requests.iter().copied().find(|r| r.id == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    DuplicateRequest {
        id: RequestId,
        first: usize,
        second: usize,
    },
    DuplicateBaseRevision {
        first: usize,
        second: usize,
    },
    TooManyRequests,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::DuplicateRequest { id, first, second } => write!(
                f,
                "request {:016x} {:016x} appears twice (image offsets {first:#x} and {second:#x})",
                id.0[0], id.0[1]
            ),
            Self::DuplicateBaseRevision { first, second } => write!(
                f,
                "two base revision tags (image offsets {first:#x} and {second:#x})"
            ),
            Self::TooManyRequests => write!(f, "more than {MAX_REQUESTS} requests"),
        }
    }
}

fn word(image: &[u8], at: usize) -> Option<u64> {
    let b = image.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn words_match(image: &[u8], at: usize, expected: &[u64]) -> bool {
    expected
        .iter()
        .enumerate()
        .all(|(i, &w)| word(image, at + 8 * i) == Some(w))
}

/// Scans a loaded image whose first byte is 8-byte aligned in the kernel's address space.
pub fn scan(image: &[u8]) -> Result<Scan, ScanError> {
    let mut found = Scan::default();
    let mut at = 0;
    while at + 8 <= image.len() {
        if words_match(image, at, &REQUESTS_START_MARKER) {
            found = Scan::default();
            at += 8 * REQUESTS_START_MARKER.len();
            continue;
        }
        if words_match(image, at, &REQUESTS_END_MARKER) {
            break;
        }
        if words_match(image, at, &BASE_REVISION_MAGIC) {
            if let Some(requested) = word(image, at + 16) {
                if let Some(first) = found.base_revision {
                    return Err(ScanError::DuplicateBaseRevision {
                        first: first.offset,
                        second: at,
                    });
                }
                found.base_revision = Some(BaseRevisionTag {
                    offset: at,
                    requested,
                });
                at += 24;
                continue;
            }
        }
        if words_match(image, at, &COMMON_MAGIC) {
            if let (Some(a), Some(b)) = (word(image, at + 16), word(image, at + 24)) {
                let id = RequestId([a, b]);
                if let Some(first) = found.find(id) {
                    return Err(ScanError::DuplicateRequest {
                        id,
                        first: first.offset,
                        second: at,
                    });
                }
                found
                    .requests
                    .push(Request { offset: at, id })
                    .map_err(|_| ScanError::TooManyRequests)?;
                at += 32;
                continue;
            }
        }
        at += 8;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{HHDM, MEMORY_MAP, MP};

    #[derive(Default)]
    struct ImageBuilder(Vec<u64>);

    impl ImageBuilder {
        fn words(mut self, w: &[u64]) -> Self {
            self.0.extend_from_slice(w);
            self
        }
        fn junk(self, n: usize) -> Self {
            self.words(&vec![0x1234_5678_9abc_def0; n])
        }
        fn request(self, id: RequestId) -> Self {
            self.words(&id.full()).words(&[0, 0])
        }
        fn base_revision(self, n: u64) -> Self {
            self.words(&BASE_REVISION_MAGIC).words(&[n])
        }
        fn bytes(&self) -> Vec<u8> {
            self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
        }
    }

    #[test]
    fn requests_and_base_revision_are_found_anywhere_on_8_byte_boundaries() {
        let image = ImageBuilder::default()
            .junk(3)
            .base_revision(3)
            .junk(1)
            .request(HHDM)
            .request(MP)
            .junk(2)
            .bytes();
        let scan = scan(&image).unwrap();
        assert_eq!(
            scan.base_revision,
            Some(BaseRevisionTag {
                offset: 24,
                requested: 3
            })
        );
        assert_eq!(scan.loaded_revision(), 3);
        assert_eq!(scan.find(HHDM).unwrap().offset, 56);
        assert_eq!(scan.find(MP).unwrap().offset, 56 + 48);
        assert!(scan.find(MEMORY_MAP).is_none());
    }

    #[test]
    fn misaligned_magic_is_not_a_request() {
        let mut image = vec![0u8; 4];
        image.extend(ImageBuilder::default().request(HHDM).bytes());
        assert!(scan(&image).unwrap().requests.is_empty());
    }

    #[test]
    fn start_marker_discards_everything_before_it() {
        let image = ImageBuilder::default()
            .request(HHDM)
            .base_revision(1)
            .words(&REQUESTS_START_MARKER)
            .request(MP)
            .bytes();
        let scan = scan(&image).unwrap();
        assert!(scan.find(HHDM).is_none());
        assert!(scan.base_revision.is_none());
        assert_eq!(scan.loaded_revision(), 0);
        assert!(scan.find(MP).is_some());
    }

    #[test]
    fn end_marker_stops_the_scan() {
        let image = ImageBuilder::default()
            .request(HHDM)
            .words(&REQUESTS_END_MARKER)
            .request(MP)
            .bytes();
        let scan = scan(&image).unwrap();
        assert!(scan.find(HHDM).is_some());
        assert!(scan.find(MP).is_none());
    }

    #[test]
    fn duplicate_request_ids_are_rejected() {
        let image = ImageBuilder::default()
            .request(HHDM)
            .junk(1)
            .request(HHDM)
            .bytes();
        assert_eq!(
            scan(&image).unwrap_err(),
            ScanError::DuplicateRequest {
                id: HHDM,
                first: 0,
                second: 56
            }
        );
    }

    #[test]
    fn duplicate_base_revision_tags_are_rejected() {
        let image = ImageBuilder::default()
            .base_revision(2)
            .base_revision(3)
            .bytes();
        assert!(matches!(
            scan(&image),
            Err(ScanError::DuplicateBaseRevision { .. })
        ));
    }

    #[test]
    fn revision_above_the_supported_one_loads_the_highest_supported() {
        let tag = BaseRevisionTag {
            offset: 0,
            requested: 6,
        };
        assert_eq!(tag.loaded(), MAX_BASE_REVISION);
        assert!(!tag.supported());
        let tag = BaseRevisionTag {
            offset: 0,
            requested: 2,
        };
        assert_eq!(tag.loaded(), 2);
        assert!(tag.supported());
    }

    #[test]
    fn request_cut_off_by_the_image_end_is_ignored() {
        let mut image = ImageBuilder::default().words(&COMMON_MAGIC).bytes();
        image.extend_from_slice(&[1, 2, 3]);
        assert!(scan(&image).unwrap().requests.is_empty());
    }

    #[test]
    fn too_many_requests_are_rejected() {
        let mut b = ImageBuilder::default();
        for i in 0..=MAX_REQUESTS as u64 {
            b = b.request(RequestId([i, i]));
        }
        assert_eq!(scan(&b.bytes()).unwrap_err(), ScanError::TooManyRequests);
    }
}
