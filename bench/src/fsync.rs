//! The audit disk's own floor: the latency of appending one audit-sized line to a file in the audit
//! directory and `fdatasync`ing it, measured in the same run as the calls it is compared with.

use crate::stats::{Latencies, Summary};
use anyhow::Result;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// About the size of one audit record.
const LINE: &[u8] = &[b'x'; 320];

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
