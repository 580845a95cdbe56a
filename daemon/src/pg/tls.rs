//! TLS to PostgreSQL (cargo feature `postgres-tls`): rustls, trusting the system's roots and, when
//! the URL names one, the PEM file of `sslrootcert`. Certificates are always verified (libpq's
//! `verify-full`); `sslmode` only says whether TLS is used, and a URL without it uses none.

use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector; the error names the file or the problem, never the URL.
pub(crate) fn connector(root_cert: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as every rustls client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = root_cert {
        let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
        let mut found = 0;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: rustls::pki_types::CertificateDer<'static> =
                cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!("sslrootcert {path}: no certificate in it"));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
