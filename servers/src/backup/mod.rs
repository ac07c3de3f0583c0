//! The backup server: checksummed JSON snapshots under one directory, written atomically.
//!
//! [`BackupStore`] owns `<data_dir>/backups` and every file in it; [`check_name`] decides which names
//! are safe; `tools` exposes `create_backup`, `list_backups` and `restore_backup`. Nothing here may read
//! or write outside the backup directory.

mod name;
mod store;
mod tools;

pub use name::check_name;
pub use store::BackupStore;
pub use tools::tools;
