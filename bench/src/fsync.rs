//! The audit disk's own floor, measured in the audit directory in the same run as the figures it
//! is compared with: the latency of making one audit-sized record durable.
//!
//! - [`floor`]: the device floor (issue 26): `pwrite` into a file already full of zeros and synced,
//!   opened with `O_DSYNC`, so each write is one round trip with no size or extent change to sync.
//! - [`ProbeKind::InPlace`]: the same file, `pwrite` then `fdatasync` (what the audit writer does).
//! - [`probe`]: appending then `fdatasync` (the file grows: data, inode and flush), the floor of
//!   the figures before issue 26.
//!
//! Figure 0 interleaves the floors with what it compares them to, a block of samples at a time
//! ([`Probe`]): on a shared VM the device's latency shifts by an order of magnitude from one second
//! to the next (another tenant's flush), and measurements taken one after the other would compare
//! different disks.

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
    let mut probe = Probe::new(dir, ProbeKind::Floor, samples)?;
    let started = Instant::now();
    probe.sample(samples)?;
    Ok(probe.finish(started.elapsed()))
}

/// What a [`Probe`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// The device floor: [`RECORD`] bytes written in place into a pre-zeroed file opened `O_DSYNC`.
    Floor,
    /// The same write, then `fdatasync`.
    InPlace,
    /// [`RECORD`] bytes appended, then `fdatasync` (the file grows).
    Append,
}

/// A scratch file of `dir` that takes samples a block at a time, so that several can be
/// interleaved; removed by [`Probe::finish`].
pub struct Probe {
    path: std::path::PathBuf,
    file: File,
    kind: ProbeKind,
    written: u64,
    latencies: Latencies,
}

impl Probe {
    /// A probe for up to `samples` records (a pre-zeroed file is made that large, and synced).
    pub fn new(dir: &Path, kind: ProbeKind, samples: usize) -> Result<Probe> {
        let path = dir.join(match kind {
            ProbeKind::Floor => ".bench-floor-probe",
            ProbeKind::InPlace => ".bench-in-place-probe",
            ProbeKind::Append => ".bench-append-probe",
        });
        let mut options = OpenOptions::new();
        match kind {
            ProbeKind::Floor | ProbeKind::InPlace => {
                zero_filled(&path, (samples * RECORD + 4096) as u64)?;
                options.write(true);
                if kind == ProbeKind::Floor {
                    options.custom_flags(O_DSYNC);
                }
            }
            ProbeKind::Append => {
                options.create(true).truncate(true).write(true);
            }
        }
        let file = options.open(&path)?;
        if kind == ProbeKind::Append {
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(Probe {
            path,
            file,
            kind,
            written: 0,
            latencies: Latencies::new(),
        })
    }

    /// Takes `n` more samples, one record each, one after the other.
    pub fn sample(&mut self, n: usize) -> Result<()> {
        let record = [b'x'; RECORD];
        for _ in 0..n {
            let t = Instant::now();
            self.file.write_all_at(&record, self.written)?;
            if self.kind != ProbeKind::Floor {
                self.file.sync_data()?;
            }
            self.latencies.record(t.elapsed());
            self.written += RECORD as u64;
        }
        Ok(())
    }

    /// The samples' summary (`elapsed`: the round's wall time); the scratch file is removed.
    pub fn finish(self, elapsed: std::time::Duration) -> Summary {
        let summary = self.latencies.summary(elapsed);
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
        summary
    }
}

/// A file of `size` zeros, written and synced (size and blocks with it), a page at a time as the
/// audit log prepares its files: written in larger pieces, the file sits in larger page-cache
/// folios, and each small write in place then costs more (see the audit crate's `prepare` module).
fn zero_filled(path: &Path, size: u64) -> Result<()> {
    let mut file = File::create(path)?;
    let zeros = [0u8; 4096];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}
