//! The optional TLS of portal listeners (`PortalSpec::tls`), for clients that only speak
//! `https://`. The first TLS portal makes the emulator's own certificate authority and one
//! certificate for `127.0.0.1`, `localhost` and the portal host, signed by it; the authority's
//! PEM is written to a file a client can trust (`Portal::ca_file`, e.g. `SSL_CERT_FILE` or
//! `REQUESTS_CA_BUNDLE` for Python), removed with the emulator.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::EmulatorError;
use crate::ids;

/// The emulator's authority and the acceptor every TLS portal listener uses.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    /// The authority's certificate, PEM.
    pub(crate) ca_file: PathBuf,
    dir: PathBuf,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn failed(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> EmulatorError {
    EmulatorError::Tls { what: what.to_owned(), source: Box::new(e) }
}

impl Tls {
    /// Makes the authority and the portals' certificate, and writes the authority's PEM to a
    /// new directory under the system's temporary directory.
    pub(crate) fn generate(portal_host: IpAddr) -> Result<Tls, EmulatorError> {
        let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Bitrix24 emulator CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| failed("CA certificate", e))?;
        let issuer = Issuer::from_params(&ca, &ca_key);

        let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        if !names.contains(&portal_host.to_string()) {
            names.push(portal_host.to_string());
        }
        let key = KeyPair::generate().map_err(|e| failed("portal key", e))?;
        let mut leaf = CertificateParams::new(names).map_err(|e| failed("portal", e))?;
        leaf.distinguished_name.push(DnType::CommonName, "Bitrix24 emulator portal");
        // OpenSSL's strict verification (Python 3.13's default) wants the issuer's key ID.
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&key, &issuer).map_err(|e| failed("portal certificate", e))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key_der)
            .map_err(|e| failed("TLS configuration", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let dir = std::env::temp_dir().join(format!("b24-emulator-{}", ids::secret(12)));
        let ca_file = dir.join("ca.pem");
        write(&dir, &ca_file, &ca_cert.pem())?;
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_file, dir })
    }
}

fn write(dir: &Path, file: &Path, pem: &str) -> Result<(), EmulatorError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(file, pem))
        .map_err(|e| failed(&format!("writing {}", file.display()), e))
}
