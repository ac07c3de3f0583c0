//! The audit disk's own floor, measured in the audit directory in the same run as the figures it
//! is compared with: the latency of making one audit-sized record durable.
//!
//! - [`floor`]: the device floor (issue 26): `pwrite` into a file already full of zeros and synced,
//!   opened with `O_DSYNC`, so each write is one round trip with no size or extent change to sync.
//! - [`in_place`]: the same file, `pwrite` then `fdatasync` (what the audit writer does).
//! - [`probe`]: appending then `fdatasync` (the file grows: data, inode and flush), the floor of
//!   the figures before issue 26.

use crate::stats::{Latencies, Summary};
use anyhow::Result;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

/// About the size of one audit record.
const LINE: &[u8] = &[b'x'; 320];

/// One record in figure 0 and in the floors that go with it (issue 26 measured a 600-byte record).
pub const RECORD: usize = 600;

/// `O_DSYNC` on Linux (the same value on x86-64 and arm64; the bench reads `/proc` and runs on Linux
/// only): the std has no name for it and the bench takes no C-binding crate for one constant.
const O_DSYNC: i32 = 0o10000;

/// `samples` appends, each followed by `fdatasync`, in a scratch file of `dir` (removed afterwards).
pub fn probe(dir: &Path, samples: usize) -> Result<Summary> {
    let path = dir.join(".bench-fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut latencies = Latencies::new();
    let started = Instant::now();
    for _ in 0..samples {
        let t = Instant::now();
        file.write_all(LINE)?;
        file.write_all(b"\n")?;
        file.sync_data()?;
        latencies.record(t.elapsed());
    }
    let summary = latencies.summary(started.elapsed());
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(summary)
}

/// The device floor: `samples` writes of [`RECORD`] bytes, one after the other, into a pre-zeroed
/// and synced scratch file of `dir` opened with `O_DSYNC` (removed afterwards).
pub fn floor(dir: &Path, samples: usize) -> Result<Summary> {
    in_zeroed_file(dir, samples, true)
}

/// `samples` writes of [`RECORD`] bytes into a pre-zeroed scratch file, each followed by
/// `fdatasync`: the audit writer's own way, without the log around it.
pub fn in_place(dir: &Path, samples: usize) -> Result<Summary> {
    in_zeroed_file(dir, samples, false)
}

fn in_zeroed_file(dir: &Path, samples: usize, dsync: bool) -> Result<Summary> {
    let path = dir.join(".bench-floor-probe");
    let size = (samples * RECORD + 4096) as u64;
    zero_filled(&path, size)?;
    let mut options = OpenOptions::new();
    options.write(true);
    if dsync {
        options.custom_flags(O_DSYNC);
    }
    let file = options.open(&path)?;
    let record = [b'x'; RECORD];
    let mut latencies = Latencies::new();
    let started = Instant::now();
    for i in 0..samples {
        let t = Instant::now();
        file.write_all_at(&record, (i * RECORD) as u64)?;
        if !dsync {
            file.sync_data()?;
        }
        latencies.record(t.elapsed());
    }
    let summary = latencies.summary(started.elapsed());
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(summary)
}

/// A file of `size` zeros, written and synced (size and blocks with it).
fn zero_filled(path: &Path, size: u64) -> Result<()> {
    let mut file = File::create(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}
