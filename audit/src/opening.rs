//! Where the writer starts, per store: the files (the directory's lock, the start-up scan and its
//! repairs) or PostgreSQL (the schema, the lease, every row read back and verified). Both hand
//! each record to the caller's `replay` in order, streamed, and say where the chain continues;
//! neither starts the writer (the `log` module does, the same way for both).

use crate::chain::ChainState;
use crate::files::{FileConfig, FileStore};
use crate::open::{self, Chunk};
use crate::pg::{LeaseState, PgOptions, PgReader, PgRuntime};
use crate::record::Verified;
use crate::store::Store;
use crate::writer::Shared;
use crate::{AuditError, AuditOptions, OpenReport, Record};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Where the writer starts: the chain it continues and the store it writes to.
pub(crate) struct Opened {
    pub chain: ChainState,
    pub last_ts_ms: i64,
    pub store: Box<dyn Store>,
    /// The PostgreSQL store's lease controls.
    pub lease: Option<Arc<LeaseState>>,
    pub pg_reader: Option<PgReader>,
}

/// Opens a log of files: takes the directory's lock, scans (and repairs) the files on a blocking
/// thread while `replay` runs here, then starts the file store where the chain ends.
pub(crate) async fn open_files<R: DeserializeOwned + Send + 'static, T: Verified<R>>(
    options: &AuditOptions,
    mut replay: impl FnMut(T),
    shared: &Arc<Shared>,
) -> Result<(OpenReport, Opened), AuditError> {
    let dir = options.dir.clone();
    let lock = tokio::task::spawn_blocking(move || crate::lock::acquire(&dir))
        .await
        .map_err(|e| AuditError::Internal(format!("audit lock task failed: {e}")))??;
    let (chunk_tx, mut chunks) = mpsc::channel::<Chunk>(4);
    // Decoded chunks go back to the scan, so their buffers are reused rather than reallocated.
    let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
    let scan_options = options.clone();
    let scan = tokio::task::spawn_blocking(move || {
        open::scan(
            &scan_options,
            |chunk| {
                chunk_tx
                    .blocking_send(chunk)
                    .map_err(|_| AuditError::Closed)
            },
            || spare_rx.try_recv().ok(),
        )
    });
    // Records are decoded here, where `replay` takes them: what a record allocates is freed on
    // the thread that allocated it.
    let (mut last_ts_ms, mut scratch, mut undecodable) = (0, Vec::new(), None);
    while let Some(mut chunk) = chunks.recv().await {
        match chunk.decode(&mut scratch, &mut replay) {
            Ok(last) => last_ts_ms = last.unwrap_or(last_ts_ms),
            Err(error) => {
                undecodable = Some(error);
                break;
            }
        }
        let _ = spare_tx.try_send(chunk);
    }
    // An undecodable record stops the scan (its next send fails) and is the error reported.
    drop(chunks);
    let scanned = scan
        .await
        .map_err(|e| AuditError::Internal(format!("audit start-up scan failed: {e}")));
    if let Some(error) = undecodable {
        return Err(error);
    }
    let (report, resume) = scanned??;
    let config = FileConfig {
        dir: options.dir.clone(),
        max_file_bytes: options.max_file_bytes,
        fsync: options.fsync,
        lock: Some(lock),
    };
    let store = FileStore::start(config, resume.segment, Arc::clone(shared))?;
    Ok((
        report,
        Opened {
            chain: resume.chain,
            last_ts_ms,
            store: Box::new(store),
            lease: None,
            pg_reader: None,
        },
    ))
}

/// Opens a log in PostgreSQL: the schema, the lease, then every record read back (and verified)
/// through the same decoder as the files', for `replay`.
pub(crate) async fn open_postgres<R: DeserializeOwned + Send + 'static, T: Verified<R>>(
    options: &AuditOptions,
    pg: &PgOptions,
    mut replay: impl FnMut(T),
    shared: &Arc<Shared>,
) -> Result<(OpenReport, Opened), AuditError> {
    if options.recover {
        return Err(AuditError::InvalidOptions(
            "recovery moves damaged files aside: it does not apply to the PostgreSQL store (verify it with `conductorctl audit verify --store`)".into(),
        ));
    }
    let dir = options.dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(dir, e))
    })
    .await
    .map_err(|e| AuditError::Internal(format!("audit directory task failed: {e}")))??;
    let runtime = PgRuntime::start()?;
    let (pages_tx, mut pages) = mpsc::channel::<Vec<Record<R>>>(4);
    let opening = crate::pg::open::<R>(
        &runtime,
        pg.clone(),
        options.stall_after,
        Arc::clone(shared),
        pages_tx,
    );
    while let Some(records) = pages.recv().await {
        records
            .into_iter()
            .map(T::from_record)
            .for_each(&mut replay);
    }
    let opened = opening
        .await
        .map_err(|e| AuditError::Internal(format!("opening the PostgreSQL store failed: {e}")))??;
    let walk = opened.walk;
    let report = OpenReport {
        records: walk.records,
        last_seq: walk.chain.next_seq - 1,
        files: 0,
        torn_line_repaired: None,
        recovered_from: None,
        set_aside: Vec::new(),
    };
    let lease = Arc::clone(&opened.store.state);
    let pg_reader = PgReader {
        runtime: Arc::clone(&opened.store.runtime),
        pool: opened.store.pool.clone(),
    };
    Ok((
        report,
        Opened {
            chain: walk.chain,
            last_ts_ms: walk.last_ts_ms,
            store: Box::new(opened.store),
            lease: Some(lease),
            pg_reader: Some(pg_reader),
        },
    ))
}
