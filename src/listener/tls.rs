//! TLS termination for `https` listeners: certificates loaded from PEM, picked by SNI.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};

use crate::config::{Certificate, Config};

/// The crypto provider every TLS context in ballast uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a certificate's PEM chain and key; the error says which file and why.
pub fn load_certified_key(config: &Config, cert: &Certificate) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = config.resolve(&cert.cert);
    let key_path = config.resolve(&cert.key);
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()));
    let chain_pem = read(&cert_path)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut chain_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate chain: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert_path.display()));
    }
    let key_pem = read(&key_path)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("`{}` is not a PEM private key: {e}", key_path.display()))?
        .ok_or_else(|| format!("`{}` holds no private key", key_path.display()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("the key in `{}` does not fit the certificate: {e}", key_path.display()))?;
    Ok(Arc::new(certified))
}

/// Picks, for each handshake, the first certificate valid for the SNI name, else the first.
#[derive(Debug)]
pub struct SniResolver {
    certificates: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver over certificates in the listener's order; the first is the default.
    pub fn new(certificates: Vec<Arc<CertifiedKey>>) -> Self {
        SniResolver { certificates }
    }

    fn valid_for(certified: &CertifiedKey, name: &ServerName<'_>) -> bool {
        certified
            .end_entity_cert()
            .ok()
            .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
            .is_some_and(|ee| ee.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|sni| {
            let name = ServerName::DnsName(DnsName::try_from(sni).ok()?.to_owned());
            self.certificates.iter().find(|c| Self::valid_for(c, &name))
        });
        by_name.or_else(|| self.certificates.first()).cloned()
    }
}

/// The rustls server context of a listener: its certificates by SNI, ALPN `h2` and `http/1.1`.
pub fn server_config(certificates: Vec<Arc<CertifiedKey>>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certificates)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
