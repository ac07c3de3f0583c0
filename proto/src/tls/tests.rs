//! Unit tests of the loaders, the subject reader and the reloading certificate, on two self-signed
//! test certificates made once with `openssl req -x509` (EC P-256; a subject with C, O, OU and
//! CN=robot-1, and one with no CN). Test fixtures only: these keys protect nothing.

use super::server::ReloadingCert;
use super::*;
use std::sync::Mutex;
use std::time::Duration;

const ROBOT_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB4zCCAYmgAwIBAgIUKaUxrmQDaayHKZolYvFzUU0o8xUwCgYIKoZIzj0EAwIw\n\
RjELMAkGA1UEBhMCREUxFDASBgNVBAoMC0NvbmR1Y3RvcmlvMQ8wDQYDVQQLDAZh\n\
Z2VudHMxEDAOBgNVBAMMB3JvYm90LTEwIBcNMjYxMjA3MDUzNTE0WhgPMjEyNjEx\n\
MTMwNTM1MTRaMEYxCzAJBgNVBAYTAkRFMRQwEgYDVQQKDAtDb25kdWN0b3JpbzEP\n\
MA0GA1UECwwGYWdlbnRzMRAwDgYDVQQDDAdyb2JvdC0xMFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAEiSioPK0P5xd1G+8LbN5O2BojaZJZNrrG0DD3MbVlb3Zc9o9m\n\
MzbcXnDdDXAKNku9/DZQyaq6qNEwDRiqegtiRaNTMFEwHQYDVR0OBBYEFEyVSkay\n\
G31Sap+9pWNR0B1imLzJMB8GA1UdIwQYMBaAFEyVSkayG31Sap+9pWNR0B1imLzJ\n\
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgUfGiuUJKI5SUAEQQ\n\
/M2sqYSA9mecpe0sScIBp2RBQskCIQD50OHPbBHV+THFnu+4lgQxvH1BB/hIB2jw\n\
Z9DmDpsCaQ==\n\
-----END CERTIFICATE-----\n\
";
const ROBOT_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguG1NGFXDsA1OwHX1\n\
VD8SQs9A+7ikSfH5HYr5iZXrhwuhRANCAASJKKg8rQ/nF3Ub7wts3k7YGiNpklk2\n\
usbQMPcxtWVvdlz2j2YzNtxecN0NcAo2S738NlDJqrqo0TANGKp6C2JF\n\
-----END PRIVATE KEY-----\n\
";
const NAMELESS_CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBgzCCASmgAwIBAgIUGhNaatKKiiL4i/mBqZZjMB7WrJowCgYIKoZIzj0EAwIw\n\
FjEUMBIGA1UECgwLQ29uZHVjdG9yaW8wIBcNMjYxMjA3MDUzNTE0WhgPMjEyNjEx\n\
MTMwNTM1MTRaMBYxFDASBgNVBAoMC0NvbmR1Y3RvcmlvMFkwEwYHKoZIzj0CAQYI\n\
KoZIzj0DAQcDQgAEk7UAYz87zpWE/lZXpFQjEcdu4hoY6dROp3H4PRegfQEh4t9i\n\
Qcu1YgL2185rEJ6Q3ggoLLVX5FSW9X2oOmt+SaNTMFEwHQYDVR0OBBYEFI0eOFeg\n\
gEiEsZohrtfa8ELxswASMB8GA1UdIwQYMBaAFI0eOFeggEiEsZohrtfa8ELxswAS\n\
MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAK8bRloS2Hao+izX\n\
Nc+oFSNNVCWlvHObsmxDSks5kR7NAiBSd2qdWh20EjSxDE4ACbJ8rPx4lPpFIcMe\n\
FyJMX9kiog==\n\
-----END CERTIFICATE-----\n\
";
const NAMELESS_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgf4uCkdNS5BX9fYGj\n\
5KAoaqaUFKgmIgWAefk4byMGI0ehRANCAASTtQBjPzvOlYT+VlekVCMRx27iGhjp\n\
1E6ncfg9F6B9ASHi32JBy7ViAvbXzmsQnpDeCCgstVfkVJb1fag6a35J\n\
-----END PRIVATE KEY-----\n\
";

/// A fresh directory of this test's own under the system's temporary directory.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("conductor-tls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a test certificate")
}

#[test]
fn the_common_name_is_read_from_the_subject_and_nothing_else() {
    assert_eq!(common_name(&der(ROBOT_CERT)).as_deref(), Some("robot-1"));
    assert_eq!(
        common_name(&der(NAMELESS_CERT)),
        None,
        "the issuer's O is not a CN"
    );
    // Any cut of a certificate, and bytes that are none, give no name rather than a panic.
    let whole = der(ROBOT_CERT).to_vec();
    for end in 0..whole.len() {
        assert_eq!(
            common_name(&CertificateDer::from(whole[..end].to_vec())),
            None,
            "cut at {end}"
        );
    }
    for bytes in [
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0x30, 0x80],
        vec![0xff; 64],
    ] {
        assert_eq!(common_name(&CertificateDer::from(bytes)), None);
    }
}

#[test]
fn each_loader_names_the_file_and_what_is_wrong() {
    let dir = scratch("loaders");
    let cert = write(&dir, "robot.pem", ROBOT_CERT);
    let key = write(&dir, "robot.key", ROBOT_KEY);
    let other_key = write(&dir, "nameless.key", NAMELESS_KEY);
    let garbage = write(
        &dir,
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let missing = dir.join("missing.pem");
    assert_eq!(load_certificates(&cert).map(|c| c.len()), Ok(1));
    let error = load_certificates(&key).expect_err("a key is no certificate");
    assert_eq!(error.file.as_deref(), Some(key.as_path()));
    assert!(
        error.to_string().contains("holds no PEM certificate"),
        "{error}"
    );
    let error = load_certificates(&garbage).expect_err("garbage");
    assert!(
        error
            .to_string()
            .starts_with(&garbage.display().to_string()),
        "{error}"
    );
    let error = load_private_key(&missing).expect_err("missing");
    assert!(error.to_string().contains("cannot be read"), "{error}");
    let error = load_private_key(&cert).expect_err("a certificate is no key");
    assert!(
        error.to_string().contains("holds no PEM private key"),
        "{error}"
    );
    load_certified_key(&cert, &key).expect("the pair belongs together");
    let error = load_certified_key(&cert, &other_key).expect_err("another certificate's key");
    assert_eq!(error.file.as_deref(), Some(other_key.as_path()));
    assert!(
        error.to_string().contains(&cert.display().to_string()),
        "{error}"
    );
    let roots = load_roots(&cert).expect("a self-signed certificate is a trust anchor");
    assert_eq!(roots.len(), 1);
}

#[test]
fn client_and_server_settings_refuse_half_an_identity() {
    let dir = scratch("settings");
    let cert = write(&dir, "robot.pem", ROBOT_CERT);
    let key = write(&dir, "robot.key", ROBOT_KEY);
    let half = ClientTls {
        ca_file: Some(cert.clone()),
        cert_file: Some(cert.clone()),
        key_file: None,
    };
    let error = half
        .rustls_config()
        .expect_err("a certificate without its key");
    assert!(error.to_string().contains("needs its key file"), "{error}");
    assert!(half.tonic_config().is_err());
    let whole = ClientTls {
        key_file: Some(key.clone()),
        ..half
    };
    whole.rustls_config().expect("CA and client certificate");
    whole.tonic_config().expect("the same for tonic");
    let server = ServerTls {
        cert_file: cert.clone(),
        key_file: key.clone(),
        client_ca_file: None,
        client_certs: ClientCerts::Required,
    };
    let report: ReloadReport = Arc::new(|_| {});
    let error = server
        .server_config(&[ALPN_H2], report.clone())
        .expect_err("no client CA");
    assert!(error.to_string().contains("no client CA file"), "{error}");
    let server = ServerTls {
        client_ca_file: Some(cert),
        ..server
    };
    let config = server
        .server_config(&[ALPN_H2], report)
        .expect("a server configuration");
    assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    server.tonic_config().expect("tonic's server settings");
}

#[test]
fn a_changed_pair_of_files_is_read_again_and_a_broken_one_keeps_the_last_good() {
    let dir = scratch("reload");
    let cert = write(&dir, "server.pem", ROBOT_CERT);
    let key = write(&dir, "server.key", ROBOT_KEY);
    let reports = Arc::new(Mutex::new(Vec::<String>::new()));
    let heard = reports.clone();
    let report: ReloadReport = Arc::new(move |outcome| {
        let text = match outcome {
            Ok(file) => format!("reloaded {}", file.display()),
            Err(error) => format!("failed {error}"),
        };
        heard.lock().expect("reports").push(text);
    });
    // Checked at every handshake here, instead of at most once a second.
    let resolver = ReloadingCert::load(&cert, &key, report, Duration::ZERO).expect("loads");
    let name = |resolver: &ReloadingCert| common_name(&resolver.current().cert[0]);
    assert_eq!(name(&resolver).as_deref(), Some("robot-1"));
    assert_eq!(
        name(&resolver).as_deref(),
        Some("robot-1"),
        "unchanged files are not reported"
    );
    assert!(reports.lock().expect("reports").is_empty());

    write(&dir, "server.pem", NAMELESS_CERT);
    assert_eq!(
        name(&resolver).as_deref(),
        Some("robot-1"),
        "the new certificate, the old key"
    );
    write(&dir, "server.key", NAMELESS_KEY);
    assert_eq!(name(&resolver), None, "the new pair");

    write(&dir, "server.pem", "not a certificate");
    assert_eq!(name(&resolver), None, "the last good pair stays");
    assert_eq!(name(&resolver), None);
    let reports = reports.lock().expect("reports").clone();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(
        reports[0].starts_with("failed") && reports[0].contains("server.key"),
        "{reports:?}"
    );
    assert!(reports[1].starts_with("reloaded"), "{reports:?}");
    assert!(
        reports[2].starts_with("failed") && reports[2].contains("server.pem"),
        "{reports:?}"
    );
}
