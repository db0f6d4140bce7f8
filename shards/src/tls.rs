//! The cluster's certificates and the TLS configurations of its endpoints.
//!
//! `cluster init` creates a CA and, per node, a certificate signed by it that
//! names the node's role (`COORDINATOR_NAME` or `SHARD_SERVER_NAME`). Shard
//! servers require a client certificate from that CA that names the
//! coordinator (node-to-node traffic is mutual TLS, and a shard server's own
//! certificate cannot send rounds to another); clients and the coordinator
//! connect by role name, so a node in one role cannot pose as another. The
//! coordinator's client port authenticates the server only, since clients
//! authenticate every transaction with its ed25519 signature.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The application protocol name both sides must agree on.
pub const ALPN: &[u8] = b"caduceus/1";

/// The name every coordinator certificate holds, and only coordinator certificates: clients
/// connect to the coordinator by it, and shard servers admit only peers that hold it.
pub const COORDINATOR_NAME: &str = "coordinator.caduceus.internal";
/// The name every shard server certificate holds: the coordinator connects to shard servers by
/// it, so a coordinator certificate cannot stand in for a shard server.
pub const SHARD_SERVER_NAME: &str = "shard.caduceus.internal";

/// Whether the peer of a connection presented a certificate (already checked against the
/// cluster CA during the handshake) that names `role_name`.
pub fn peer_named(connection: &quinn::Connection, role_name: &str) -> bool {
    let Some(identity) = connection.peer_identity() else { return false };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else { return false };
    let Some(leaf) = chain.first() else { return false };
    let Ok(certificate) = webpki::EndEntityCert::try_from(leaf) else { return false };
    let Ok(name) = rustls::pki_types::ServerName::try_from(role_name) else { return false };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

/// A PEM certificate and its PEM private key.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// The common name of the CA `cluster init` creates.
pub const CA_NAME: &str = "Caduceus cluster CA";

fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// A new cluster CA.
pub fn new_ca(name: &str) -> Result<(Issued, Issuer<'static, KeyPair>)> {
    let params = ca_params(name)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let issued = Issued { cert: cert.pem(), key: key.serialize_pem() };
    Ok((issued, Issuer::new(params, key)))
}

/// The issuer of a CA `new_ca(name)` created, from its private key (PEM), to issue more node
/// certificates. Whether the key is that of a given CA certificate is for `check_node` to say.
pub fn ca_issuer(name: &str, key_pem: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
    Ok(Issuer::new(ca_params(name)?, key))
}

/// Checks that a node certificate (PEM) chains to the CA in `roots` and names `role_name`, as
/// the node's peers will check it.
pub fn check_node(roots: Arc<rustls::RootCertStore>, cert_pem: &str, role_name: &str) -> Result<()> {
    use rustls::client::danger::ServerCertVerifier;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("not a PEM certificate")?;
    let name = rustls::pki_types::ServerName::try_from(role_name.to_owned())?;
    verifier.verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())?;
    Ok(())
}

/// A node certificate for `name` in a role (`COORDINATOR_NAME` or `SHARD_SERVER_NAME`), for
/// both server and client authentication. It names the role, and no name another role holds,
/// plus the `hosts` (DNS names or IP addresses) the node is reached at in a deployment.
pub fn new_node(name: &str, role_name: &str, hosts: &[String], issuer: &Issuer<'static, KeyPair>) -> Result<Issued> {
    let mut names = vec![role_name.to_string(), format!("{name}.caduceus.internal")];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Issued { cert: cert.pem(), key: key.serialize_pem() })
}

/// A node's identity read from its files: certificate chain and private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
        Ok(Self { chain, key })
    }
}

/// The trusted roots: the cluster CA certificate.
pub fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(idle: std::time::Duration) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(crate::wire::STREAMS_PER_CONNECTION.into());
    transport.max_concurrent_uni_streams(0u8.into());
    transport.max_idle_timeout(Some(idle.try_into().expect("a small timeout")));
    transport.keep_alive_interval(Some(idle / 3));
    Arc::new(transport)
}

/// A server: with `clients_from` set, every client must present a certificate from that CA.
pub fn server(identity: Identity, clients_from: Option<Arc<rustls::RootCertStore>>) -> Result<quinn::ServerConfig> {
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match clients_from {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| anyhow!("{e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(std::time::Duration::from_secs(10)));
    Ok(config)
}

/// A client trusting `roots`, presenting `identity` when given (node-to-node traffic).
pub fn client(roots: Arc<rustls::RootCertStore>, identity: Option<Identity>) -> Result<quinn::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| anyhow!("{e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(std::time::Duration::from_secs(10)));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_valid(pem: &str, name: &str) -> bool {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let certificate = webpki::EndEntityCert::try_from(&der).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name).unwrap();
        certificate.verify_is_valid_for_subject_name(&name).is_ok()
    }

    #[test]
    fn a_node_certificate_names_its_role_and_its_hosts_and_nothing_else() {
        let (_, issuer) = new_ca("test CA").unwrap();
        let hosts = vec!["db1.exchange.example".to_owned(), "10.1.2.3".to_owned()];
        let node = new_node("shard-0", SHARD_SERVER_NAME, &hosts, &issuer).unwrap();
        for name in [SHARD_SERVER_NAME, "db1.exchange.example", "10.1.2.3"] {
            assert!(names_valid(&node.cert, name), "{name}");
        }
        for name in [COORDINATOR_NAME, "localhost", "127.0.0.1", "db2.exchange.example"] {
            assert!(!names_valid(&node.cert, name), "{name}");
        }
    }
}
