//! TLS settings for both MQTT sides, loaded once at start with errors that name the key and
//! the file: the embedded broker's server certificate (and, for mutual TLS, the CA that signs
//! client certificates), and the CA and client certificate used towards an external broker.
//!
//! The crypto provider is named explicitly (aws-lc-rs, rustls' default) rather than taken from
//! rustls' process-wide default, which is ambiguous when the dependency tree links two.

use std::sync::Arc;

use tokio_rustls::rustls::{
    self,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    std::fs::File::open(path).map_err(|e| format!("{key}: {path}: {e}"))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}: {path}: not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    std::fs::File::open(path).map_err(|e| format!("{key}: {path}: {e}"))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!("{key}: {path} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
    })
}

fn roots(key: &str, path: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let (_, bad) = store.add_parsable_certificates(certs(key, path)?);
    if store.is_empty() {
        return Err(format!(
            "{key}: {path}: none of its {bad} certificates is usable as a CA"
        ));
    }
    Ok(store)
}

/// The embedded broker's TLS listener: its certificate chain and key, and optionally the CA
/// that client certificates must be signed by (mutual TLS: clients without one are refused).
pub fn server_config(
    cert_file: &str,
    key_file: &str,
    client_ca_file: Option<&str>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = certs("mqtt.tls_cert", cert_file)?;
    let key = private_key("mqtt.tls_key", key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca_file {
        Some(ca) => {
            let store = roots("mqtt.tls_client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|e| format!("mqtt.tls_client_ca: {ca}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "mqtt.tls_cert and mqtt.tls_key: {cert_file} and {key_file} do not go together ({e})"
        )
    })?;
    Ok(Arc::new(config))
}

/// Towards an external `mqtts://` broker: trust `ca_file` (else the system's CAs), and present
/// a client certificate when one is given.
pub fn client_config(
    ca_file: Option<&str>,
    client_cert: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, String> {
    let store = match ca_file {
        Some(ca) => roots("mqtt.broker_ca", ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "mqtt.url is mqtts:// but the system has no CA certificates (install Debian's ca-certificates) and mqtt.broker_ca is empty".into(),
                );
            }
            store
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(store);
    let config = match client_cert {
        Some((cert, key)) => {
            let chain = certs("mqtt.client_cert", cert)?;
            let key_der = private_key("mqtt.client_key", key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!("mqtt.client_cert and mqtt.client_key: {cert} and {key} do not go together ({e})")
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// An operator's reading of a failed TLS handshake: what probably happened and what to do.
pub fn explain_handshake_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "not TLS: a plaintext client on the TLS port? Point it at mqtt.listen or turn TLS on in the client"
    } else if text.contains("UnknownCA") || text.contains("BadCertificate") {
        "the client does not trust this broker's certificate: give it the CA that signed mqtt.tls_cert"
    } else if text.contains("peer sent no certificates") || text.contains("NoCertificatesPresented")
    {
        "the client sent no certificate, and mqtt.tls_client_ca requires one"
    } else if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        "the client's certificate is not signed by mqtt.tls_client_ca"
    } else if e.kind() == std::io::ErrorKind::TimedOut {
        "the client did not finish the handshake in time"
    } else {
        "the client gave up or speaks no TLS version in common"
    };
    format!("{text} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let junk = junk.to_str().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();

        let e = server_config(junk, junk, None).unwrap_err();
        assert!(
            e.starts_with("mqtt.tls_cert:") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = server_config(missing, junk, None).unwrap_err();
        assert!(
            e.starts_with("mqtt.tls_cert:") && e.contains(missing),
            "{e}"
        );
        let e = client_config(Some(junk), None).unwrap_err();
        assert!(e.starts_with("mqtt.broker_ca:"), "{e}");
    }

    #[test]
    fn handshake_errors_get_a_hint() {
        let plaintext = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(explain_handshake_error(&plaintext).contains("plaintext client"));
        let no_cert = std::io::Error::other(rustls::Error::NoCertificatesPresented);
        assert!(explain_handshake_error(&no_cert).contains("mqtt.tls_client_ca"));
    }
}
