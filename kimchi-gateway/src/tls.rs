//! TLS: the configured certificate, or a self-signed one generated once into the state
//! directory and reused on every start (so clients that pinned it keep working).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::Startup;

const GENERATED_CERT: &str = "cert.pem";
const GENERATED_KEY: &str = "key.pem";

/// Where the certificate and key come from.
pub enum Source<'a> {
    Files { cert: &'a Path, key: &'a Path },
    SelfSigned { state_dir: &'a Path },
}

/// The rustls configuration: ring provider, TLS 1.2 and 1.3 only, ALPN h2 then
/// http/1.1.
pub fn server_config(source: Source<'_>) -> Startup<Arc<ServerConfig>> {
    let (cert, key) = match source {
        Source::Files { cert, key } => (cert.to_owned(), key.to_owned()),
        Source::SelfSigned { state_dir } => self_signed(state_dir)?,
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()).into());
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("cannot read the private key from {}: {e}", key.display()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate {} and its key do not fit: {e}", cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Paths of the generated pair, creating it when either file is missing.
fn self_signed(state_dir: &Path) -> Startup<(PathBuf, PathBuf)> {
    let cert = state_dir.join(GENERATED_CERT);
    let key = state_dir.join(GENERATED_KEY);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;

    let generated = rcgen::CertificateParams::new(subject_alt_names())
        .and_then(|mut params| {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Kimchi (self-signed)");
            let key = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            Ok((cert, key))
        })
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    let (generated_cert, generated_key) = generated;
    // Key first: a crash in between leaves no certificate, so the next start regenerates.
    write_private(&key, generated_key.serialize_pem().as_bytes())?;
    write_private(&cert, generated_cert.pem().as_bytes())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn subject_alt_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    // rcgen refuses names that are not IA5 (ASCII); such a host name is just left out.
    if !host.is_empty() && host != "localhost" && host.is_ascii() {
        names.push(host.to_owned());
    }
    names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
    names
}

/// Writes a file readable by its owner only, atomically (temporary file + rename).
fn write_private(path: &Path, contents: &[u8]) -> Startup<()> {
    let tmp = path.with_extension("pem.tmp");
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kimchi-gw-tls-{name}-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        dir.join("state")
    }

    #[test]
    fn self_signed_pair_is_generated_once_private_and_reused() {
        let state = temp_dir("gen");
        let config = server_config(Source::SelfSigned { state_dir: &state }).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let cert = state.join(GENERATED_CERT);
        let key = state.join(GENERATED_KEY);
        for file in [&cert, &key] {
            let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let first = fs::read(&cert).unwrap();
        server_config(Source::SelfSigned { state_dir: &state }).unwrap();
        assert_eq!(
            fs::read(&cert).unwrap(),
            first,
            "certificate was regenerated"
        );

        // Configured files are used as given.
        server_config(Source::Files {
            cert: &cert,
            key: &key,
        })
        .unwrap();
        fs::remove_dir_all(state.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_configured_files_are_a_clear_error() {
        let dir = temp_dir("missing");
        let err = server_config(Source::Files {
            cert: &dir.join("c.pem"),
            key: &dir.join("k.pem"),
        })
        .unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }

    #[test]
    fn alt_names_cover_loopback() {
        let names = subject_alt_names();
        for wanted in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.iter().any(|n| n == wanted), "{names:?}");
        }
    }
}
