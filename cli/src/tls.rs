//! TLS to the orchestrator: the scheme the TLS flags imply for an address, the endpoint's TLS
//! settings (files read through `conductor_proto::tls`, as every process reads them), and what a
//! failed handshake tells the user to do.

use crate::cli::TlsArgs;
use crate::client::{CliError, error_chain, orchestrator_url};
use tonic::transport::Endpoint;

impl TlsArgs {
    fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// The orchestrator's URL for `address`: TLS flags make an address without a scheme `https://`,
/// and are refused with an explicit `http://` (a plaintext connection would ignore them).
pub fn url_for(address: &str, tls: &TlsArgs) -> Result<String, CliError> {
    let url = orchestrator_url(address);
    match url.strip_prefix("http://") {
        Some(rest) if tls.any() && !address.contains("://") => Ok(format!("https://{rest}")),
        Some(_) if tls.any() => Err(CliError::Usage(format!(
            "--ca-file, --cert and --key are for TLS, but the orchestrator's address {url} says http://: write https://"
        ))),
        _ => Ok(url),
    }
}

/// `endpoint` with TLS when `url` is `https://`: the CA (else the system's roots) and the client
/// certificate of `tls`; a file that cannot be used is a usage error naming it.
pub fn secure(endpoint: Endpoint, url: &str, tls: &TlsArgs) -> Result<Endpoint, CliError> {
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let settings = conductor_proto::tls::ClientTls {
        ca_file: tls.ca_file.clone(),
        cert_file: tls.cert.clone(),
        key_file: tls.key.clone(),
    };
    let config = settings
        .tonic_config()
        .map_err(|e| CliError::Usage(format!("TLS: {e}")))?;
    endpoint
        .tls_config(config)
        .map_err(|e| CliError::Usage(format!("TLS: {}", error_chain(&e))))
}

/// A transport failure that is a TLS handshake's, with what to do about it: the orchestrator's
/// certificate is not trusted (name its CA), or it refused ours (with TLS 1.3 that shows at the
/// first call, as an alert, or, when the orchestrator closes first, as a connection it dropped
/// while we presented a certificate: `presented`).
pub fn failure(url: &str, reason: &str, presented: bool) -> Option<CliError> {
    let lower = reason.to_ascii_lowercase();
    let dropped = [
        "broken pipe",
        "connection reset",
        "stream closed",
        "connection closed",
    ]
    .iter()
    .any(|words| lower.contains(words));
    let hint = if lower.contains("invalid peer certificate") {
        "trust the orchestrator's CA with --ca-file FILE (or the context's ca_file)"
    } else if lower.contains("alert") && lower.contains("certificate")
        || lower.contains("unknownca")
    {
        "the orchestrator wants a client certificate its CA signed: pass --cert FILE and --key FILE (or the context's cert_file and key_file)"
    } else if presented && url.starts_with("https://") && dropped {
        "the orchestrator dropped the connection as it checked your client certificate: pass --cert FILE and --key FILE its CA signed (or the context's cert_file and key_file)"
    } else if lower.contains("invalid content type") || lower.contains("corrupt message") {
        "the orchestrator does not speak TLS there: use http://, or its TLS address"
    } else {
        return None;
    };
    Some(CliError::Tls {
        url: url.to_owned(),
        reason: reason.to_owned(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn tls_flags_make_an_address_https_and_refuse_http() {
        let none = TlsArgs::default();
        let ca = TlsArgs {
            ca_file: Some(PathBuf::from("ca.pem")),
            ..TlsArgs::default()
        };
        assert_eq!(
            url_for("127.0.0.1:1", &none).ok().as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            url_for("127.0.0.1:1", &ca).ok().as_deref(),
            Some("https://127.0.0.1:1")
        );
        assert_eq!(
            url_for("https://gw:443", &none).ok().as_deref(),
            Some("https://gw:443")
        );
        assert!(matches!(
            url_for("http://gw:1", &ca),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn a_handshake_failure_says_what_to_pass() {
        let url = "https://gw:1";
        let untrusted = failure(
            url,
            "transport error: invalid peer certificate: UnknownIssuer",
            false,
        );
        assert!(untrusted.is_some_and(|e| e.to_string().contains("--ca-file")));
        let refused = failure(
            url,
            "h2 protocol error: received fatal alert: CertificateRequired",
            false,
        );
        assert!(refused.is_some_and(|e| e.to_string().contains("--cert")));
        let dropped = "transport error: connection error: stream closed because of a broken pipe";
        assert!(failure(url, dropped, true).is_some_and(|e| e.to_string().contains("--cert")));
        assert!(failure(url, dropped, false).is_none());
        let plain = failure(
            url,
            "transport error: received corrupt message of type InvalidContentType",
            false,
        );
        assert!(plain.is_some_and(|e| e.to_string().contains("http://")));
        assert!(failure(url, "tcp connect error: Connection refused", true).is_none());
    }
}
