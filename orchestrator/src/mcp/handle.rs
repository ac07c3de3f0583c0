//! Workflow handles: how a client of the session-free (2026-07-28) era keeps its workflow across
//! calls, in the pattern that specification gives for state across requests: the server mints a
//! handle, the client passes it back as an ordinary tool argument ([`HANDLE_ARGUMENT`]).
//!
//! A handle names a workflow and is sealed (HMAC-SHA-256 under a key only the orchestrator holds,
//! as the specification asks of any state a client echoes) to the identity that was given it: a
//! handle presented by another identity, altered, or forged is refused the same way, without saying
//! which. The key lives beside the audit log (`.mcp-handle.key`: owner-only, and hidden, so a copy
//! of the log taken with `*` leaves it behind), so handles outlive a restart as the workflows they
//! name do.
//!
//! A handle is a secret: it is stripped from a call's arguments before anything records or forwards
//! them, and never written to a log line or an audit record. Only the workflow id inside it is.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

/// The tool argument a session-free client passes its handle in (named so that no downstream
/// tool's own argument is taken for it; the gateway removes it before forwarding).
pub const HANDLE_ARGUMENT: &str = "conductorio_workflow";
/// `_meta` key of a result carrying the handle of the workflow the call ran in.
pub const HANDLE_META_KEY: &str = "io.conductorio/workflowHandle";
/// The key file's name in the audit directory.
pub const KEY_FILE: &str = ".mcp-handle.key";

const PREFIX: &str = "wfh1.";
const KEY_BYTES: usize = 32;
/// The tag's length: 128 bits of HMAC-SHA-256, as hex.
const TAG_BYTES: usize = 16;

/// The key handles are sealed with. Cheap to clone.
#[derive(Clone)]
pub struct HandleKey(Arc<[u8; KEY_BYTES]>);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

/// Why a handle was refused; the message never says which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the workflow handle in \"{HANDLE_ARGUMENT}\" is not valid for this caller (altered, or issued to another identity): pass the handle a result gave you, or leave the argument out to use your current workflow"
)]
pub struct HandleRefused;

impl HandleKey {
    /// The key in `dir`'s [`KEY_FILE`], made (random, owner-only) if there is none yet.
    pub fn load_or_create(dir: &Path) -> std::io::Result<HandleKey> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {} bytes, not the {KEY_BYTES} of a workflow-handle key: remove it to make a new one (handles given out so far stop working)",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(HandleKey(Arc::new(key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = HandleKey::random();
                std::fs::create_dir_all(dir)?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(key.0.as_slice())?;
                        file.sync_all()?;
                        Ok(key)
                    }
                    // Made by another process meanwhile: use that one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        HandleKey::load_or_create(dir)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh random key (kept in memory only): two version-4 UUIDs' bytes, 244 random bits
    /// from the operating system's generator.
    pub fn random() -> HandleKey {
        let mut key = [0u8; KEY_BYTES];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        HandleKey(Arc::new(key))
    }

    /// The key of the orchestrator whose audit log is in `dir`; if it cannot be read or made, a key
    /// in memory (handles then stop working at the next start), said loudly.
    pub fn for_audit_dir(dir: &Path) -> HandleKey {
        HandleKey::load_or_create(dir).unwrap_or_else(|e| {
            tracing::error!(error = %e, dir = %dir.display(), "cannot keep the workflow-handle key beside the audit log; handles given out now will not outlive a restart");
            HandleKey::random()
        })
    }

    /// The key's bytes, to keep where every node of a cluster finds them.
    pub fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The key of `bytes`, if they are a key's length.
    pub fn from_bytes(bytes: &[u8]) -> Option<HandleKey> {
        let key: [u8; KEY_BYTES] = bytes.try_into().ok()?;
        Some(HandleKey(Arc::new(key)))
    }

    /// The handle of `workflow_id` for `identity`.
    pub fn seal(&self, workflow_id: &str, identity: &str) -> String {
        let tag = self.tag(workflow_id, identity);
        format!("{PREFIX}{workflow_id}.{}", hex::encode(&tag[..TAG_BYTES]))
    }

    /// The workflow `handle` names, if it was sealed for `identity` with this key.
    pub fn open(&self, handle: &str, identity: &str) -> Result<String, HandleRefused> {
        let (workflow_id, tag) = handle
            .trim()
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.rsplit_once('.'))
            .ok_or(HandleRefused)?;
        let tag = hex::decode(tag).map_err(|_| HandleRefused)?;
        if tag.len() != TAG_BYTES || workflow_id.is_empty() {
            return Err(HandleRefused);
        }
        self.mac(workflow_id, identity)
            .verify_truncated_left(&tag)
            .map_err(|_| HandleRefused)?;
        Ok(workflow_id.to_owned())
    }

    fn mac(&self, workflow_id: &str, identity: &str) -> Hmac<Sha256> {
        // Lengths first, so that no (workflow, identity) pair's bytes run into another's.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes a key of any length");
        mac.update(b"conductorio workflow handle v1\0");
        mac.update(&(workflow_id.len() as u64).to_be_bytes());
        mac.update(workflow_id.as_bytes());
        mac.update(&(identity.len() as u64).to_be_bytes());
        mac.update(identity.as_bytes());
        mac
    }

    fn tag(&self, workflow_id: &str, identity: &str) -> Vec<u8> {
        self.mac(workflow_id, identity)
            .finalize()
            .into_bytes()
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_opens_only_for_its_identity_and_only_unaltered() {
        let key = HandleKey::random();
        let handle = key.seal("wf-0123456789ab", "alice");
        assert!(handle.starts_with("wfh1.wf-0123456789ab."), "{handle}");
        assert_eq!(key.open(&handle, "alice").as_deref(), Ok("wf-0123456789ab"));
        assert_eq!(key.open(&handle, "bob"), Err(HandleRefused));
        assert_eq!(key.open(&handle, "alice "), Err(HandleRefused));

        let other = HandleKey::random();
        assert_eq!(
            other.open(&handle, "alice"),
            Err(HandleRefused),
            "another key"
        );

        let moved = handle.replace("wf-0123456789ab", "wf-0123456789ac");
        assert_eq!(
            key.open(&moved, "alice"),
            Err(HandleRefused),
            "another workflow"
        );
        let mut flipped = handle.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            key.open(&flipped, "alice"),
            Err(HandleRefused),
            "a changed tag"
        );
        for forged in [
            "",
            "wf-0123456789ab",
            "wfh1.",
            "wfh1.wf-1.",
            "wfh1..00112233445566778899aabbccddeeff",
            "wfh1.wf-1.zz112233445566778899aabbccddeeff",
            "wfh1.wf-1.0011",
            "wfh2.wf-0123456789ab.00112233445566778899aabbccddeeff",
        ] {
            assert_eq!(key.open(forged, "alice"), Err(HandleRefused), "{forged:?}");
        }
    }

    #[test]
    fn the_key_outlives_a_restart_and_a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = HandleKey::load_or_create(dir.path()).unwrap();
        let handle = first.seal("wf-1", "alice");
        let again = HandleKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&handle, "alice").as_deref(), Ok("wf-1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "only its owner reads the key: {mode:o}");
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        let error = HandleKey::load_or_create(dir.path()).unwrap_err();
        assert!(error.to_string().contains(KEY_FILE), "{error}");
    }
}
