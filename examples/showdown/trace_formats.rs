//! Decoders for the traces in `../shared/traces`, in their original formats and as the decoded
//! copies in `normalized/`, exactly as that folder's README describes them. Every decoder returns
//! one `u64` key per request, in order; for each trace the originals decode to the same keys as
//! its `normalized/` copy (`tests/trace_opt.rs` checks it).
//!
//! * [`Format::Normalized`], `normalized/*.keys.bin.gz`: gzip; a little-endian `u64` per request.
//! * [`Format::Lirs`], `lirs-*.trace.gz`: gzip text; a decimal key per line; empty lines and
//!   lines that are `*` (checkpoint markers) are not requests; LF or CRLF line ends.
//! * [`Format::Arc`], `arc-*.lis.zst`: zstd text; `start count ignore reqno` per line, which is
//!   `count` requests, for `start`, `start + 1`, …, `start + count - 1`.
//! * [`Format::Corda`], `corda-*.gz`: gzip; a big-endian `i64` per request, kept as its
//!   two's-complement `u64`.
//! * [`Format::Cache2k`], `cache2k-*.trace.xz`: xz; a big-endian `u32` per request.
//!
//! Plain (uncompressed) files are read too: the compression is picked from the file's first
//! bytes, not from its name, and the record format from the name (see [`Format::detect`]).

use std::io::{BufRead, Read};
use std::path::Path;

/// How a trace file encodes its requests. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `normalized/<name>.keys.bin.gz`: little-endian `u64` keys.
    Normalized,
    /// LIRS text: one decimal key per line, `*` markers and empty lines skipped.
    Lirs,
    /// ARC `.lis` text: `start count ignore reqno`, expanded to `count` consecutive keys.
    Arc,
    /// Corda: big-endian `i64` keys.
    Corda,
    /// cache2k: big-endian `u32` keys.
    Cache2k,
}

impl Format {
    /// Every format, in the order of the module docs.
    pub const ALL: [Format; 5] = [
        Format::Normalized,
        Format::Lirs,
        Format::Arc,
        Format::Corda,
        Format::Cache2k,
    ];

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Normalized => "normalized",
            Format::Lirs => "lirs",
            Format::Arc => "arc",
            Format::Corda => "corda",
            Format::Cache2k => "cache2k",
        }
    }

    /// The format called `name` (as [`Format::name`] spells it).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format of a file, from its name: `*.keys.bin*` normalized, `*.lis*` ARC, `corda*`
    /// Corda, `cache2k*` or `*.xz` cache2k, `lirs*` or `*.trace*` LIRS.
    pub fn detect(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let format = if name.contains(".keys.bin") {
            Format::Normalized
        } else if name.contains(".lis") {
            Format::Arc
        } else if name.starts_with("corda") {
            Format::Corda
        } else if name.starts_with("cache2k") || name.ends_with(".xz") {
            Format::Cache2k
        } else if name.starts_with("lirs") || name.contains(".trace") {
            Format::Lirs
        } else {
            return None;
        };
        Some(format)
    }
}

/// The name of a trace: its file name without the format's suffixes (`arc-P3.lis.zst` and
/// `normalized/arc-P3.keys.bin.gz` are both `arc-P3`), which is how the README's tables name it.
pub fn trace_name(path: &Path) -> String {
    let mut name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    for suffix in [
        ".gz", ".zst", ".xz", ".bin", ".keys", ".trace", ".lis", ".txt",
    ] {
        if let Some(stem) = name.strip_suffix(suffix) {
            name = stem.to_string();
        }
    }
    name
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// The decompressed bytes of `path`: gzip (every member), zstd (every frame) or xz, told apart by
/// their magic numbers; anything else is returned as it is.
pub fn decompress(path: &Path) -> std::io::Result<Vec<u8>> {
    let raw = std::fs::read(path)?;
    let mut out = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)?;
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut rest = &raw[..];
        while !rest.is_empty() {
            let mut frame = ruzstd::decoding::StreamingDecoder::new(&mut rest)
                .map_err(|e| invalid(path, format_args!("zstd: {e}")))?;
            frame.read_to_end(&mut out)?;
        }
    } else if raw.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .map_err(|e| invalid(path, format_args!("xz: {e:?}")))?;
    } else {
        out = raw;
    }
    Ok(out)
}

/// Decodes the trace at `path`, in `format` or, if `None`, the one [`Format::detect`] gives.
pub fn load_trace(path: &Path, format: Option<Format>) -> std::io::Result<Vec<u64>> {
    let format = format.or_else(|| Format::detect(path)).ok_or_else(|| {
        invalid(
            path,
            "unknown trace format; name it (normalized, lirs, arc, corda, cache2k)",
        )
    })?;
    let bytes = decompress(path)?;
    match format {
        Format::Normalized => fixed::<8>(path, &bytes, u64::from_le_bytes),
        Format::Corda => fixed::<8>(path, &bytes, |b| i64::from_be_bytes(b) as u64),
        Format::Cache2k => fixed::<4>(path, &bytes, |b| u64::from(u32::from_be_bytes(b))),
        Format::Lirs => lirs(path, &bytes),
        Format::Arc => arc(path, &bytes),
    }
}

/// Decodes one `normalized/<name>.keys.bin.gz`: gzip of little-endian u64 keys, one per request.
pub fn load_keys(path: &Path) -> std::io::Result<Vec<u64>> {
    load_trace(path, Some(Format::Normalized))
}

/// Fixed-size binary records of `N` bytes, each turned into a key by `key`.
fn fixed<const N: usize>(
    path: &Path,
    bytes: &[u8],
    key: impl Fn([u8; N]) -> u64,
) -> std::io::Result<Vec<u64>> {
    if bytes.len() % N != 0 {
        return Err(invalid(
            path,
            format_args!("{} bytes, not a multiple of {N}", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| key(c.try_into().expect("chunks of N")))
        .collect())
}

/// The lines of a text trace, without their line ends (LF or CRLF) and surrounding blanks, with
/// their 1-based line numbers for error messages.
fn lines<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> impl Iterator<Item = std::io::Result<(usize, String)>> + 'a {
    let path = path.to_path_buf();
    bytes.lines().enumerate().map(move |(i, line)| {
        line.map(|l| (i + 1, l.trim().to_string()))
            .map_err(|e| invalid(&path, format_args!("line {}: {e}", i + 1)))
    })
}

/// LIRS: a decimal key per line; empty lines and `*` markers are not requests.
fn lirs(path: &Path, bytes: &[u8]) -> std::io::Result<Vec<u64>> {
    let mut keys = Vec::new();
    for line in lines(path, bytes) {
        let (n, line) = line?;
        if line.is_empty() || line == "*" {
            continue;
        }
        let key = line
            .parse()
            .map_err(|e| invalid(path, format_args!("line {n}: {line:?}: {e}")))?;
        keys.push(key);
    }
    Ok(keys)
}

/// ARC: `start count ignore reqno` per line, which is `count` requests, for `start`,
/// `start + 1`, …, `start + count - 1` (512-byte blocks). Empty lines are skipped.
fn arc(path: &Path, bytes: &[u8]) -> std::io::Result<Vec<u64>> {
    let mut keys = Vec::new();
    for line in lines(path, bytes) {
        let (n, line) = line?;
        let mut fields = line.split_ascii_whitespace();
        let Some(start) = fields.next() else { continue };
        let bad = |what: &str| invalid(path, format_args!("line {n}: {line:?}: {what}"));
        let start: u64 = start.parse().map_err(|_| bad("bad start"))?;
        let count: u64 = fields
            .next()
            .ok_or_else(|| bad("no count"))?
            .parse()
            .map_err(|_| bad("bad count"))?;
        let end = start
            .checked_add(count)
            .ok_or_else(|| bad("range overflows"))?;
        keys.extend(start..end);
    }
    Ok(keys)
}
