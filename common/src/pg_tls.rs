//! TLS to PostgreSQL (rustls), as `DATABASE_URL`'s `sslmode` asks, with libpq's meanings:
//!
//! - unset, `disable`, `allow`, `prefer`: no TLS (as before this existed);
//! - `require`: TLS, the server's certificate not checked (encryption against a passive
//!   listener only), unless `sslrootcert` names a file: then as `verify-ca`;
//! - `verify-ca`: TLS, the certificate signed by a root of `sslrootcert`, a PEM file that must be
//!   given (the system's roots sign certificates for anyone's name, and the name is not
//!   checked here: with them, anyone holding a public certificate would pass);
//! - `verify-full`: the certificate signed by a root of `sslrootcert` (a PEM file, or `system`,
//!   the default when unset), and naming the host connected to.
//!
//! tokio-postgres knows neither `verify-*` nor `sslrootcert`, so [`split_url`] reads them out
//! of the URL and hands it `sslmode=require`. No channel binding (`ChannelBinding::none`):
//! SCRAM authenticates as without TLS.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// What `sslmode` asks (libpq's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Unset, `disable`, `allow`, `prefer`: no TLS.
    Off,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the roots that sign the server's certificate come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// `sslrootcert=system`, or unset under `verify-*`: the system's roots.
    System,
    /// A PEM file of one or more certificates.
    File(PathBuf),
}

/// What `DATABASE_URL` asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRequest {
    pub mode: SslMode,
    pub roots: Option<Roots>,
}

/// Splits `url` into what tokio-postgres parses (`sslmode` as it knows it, `sslrootcert` taken
/// out) and the TLS it asks. A URL in libpq's key=value form is handed on as it is (its
/// `sslmode` is tokio-postgres's to read; `verify-*` and `sslrootcert` need the URL form).
/// Errors name the parameter, never the URL (it may hold a password).
pub fn split_url(url: &str) -> Result<(String, TlsRequest), String> {
    let off = TlsRequest {
        mode: SslMode::Off,
        roots: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), off));
    };
    let (mut mode, mut roots) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Decoded as tokio-postgres decodes them, so `ssl%6Dode` cannot slip past.
        let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match &*key {
            "sslmode" => {
                mode = Some(match &*decoded {
                    "disable" | "allow" | "prefer" => SslMode::Off,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "DATABASE_URL's sslmode {other:?}: expected disable, allow, prefer, \
                             require, verify-ca or verify-full"
                        ))
                    }
                });
                // tokio-postgres's name for the same thing: prefer keeps its own behaviour
                // (no TLS here, as tokio-postgres with no TLS connector does).
                kept.push(match mode {
                    Some(SslMode::Off) if decoded == "prefer" => "sslmode=prefer".to_owned(),
                    Some(SslMode::Off) => "sslmode=disable".to_owned(),
                    _ => "sslmode=require".to_owned(),
                });
            }
            "sslrootcert" => {
                if decoded.is_empty() {
                    return Err("DATABASE_URL's sslrootcert is empty".into());
                }
                roots = Some(if decoded == "system" {
                    Roots::System
                } else {
                    Roots::File(PathBuf::from(&*decoded))
                });
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    let mode = match (mode.unwrap_or(SslMode::Off), &roots) {
        (SslMode::Off, Some(_)) => {
            return Err(
                "DATABASE_URL's sslrootcert is set, but its sslmode asks no TLS: add \
                 sslmode=verify-full (or verify-ca, require)"
                    .into(),
            )
        }
        // libpq's refusal too: the system's roots sign certificates for anyone's name.
        (SslMode::Require | SslMode::VerifyCa, Some(Roots::System)) => {
            return Err(
                "DATABASE_URL's sslrootcert=system needs sslmode=verify-full (any name the \
                 system's roots sign would pass otherwise)"
                    .into(),
            )
        }
        // The system's roots without the name checked would let any public certificate pass
        // (libpq too refuses verify-ca without a root file).
        (SslMode::VerifyCa, None) => {
            return Err(
                "DATABASE_URL's sslmode=verify-ca needs sslrootcert naming a PEM file of the \
                 roots that signed the server's certificate (for the system's roots, use \
                 sslmode=verify-full, which also checks the name)"
                    .into(),
            )
        }
        // libpq: `require` with a root certificate checks the chain.
        (SslMode::Require, Some(Roots::File(_))) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, TlsRequest { mode, roots }))
}

impl TlsRequest {
    /// The connector this asks for; `None`: no TLS. Reads the roots now, so a missing or
    /// empty `sslrootcert` stops the start, naming it.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to PostgreSQL: {e}"))?;
        let config = match self.mode {
            SslMode::Off => return Ok(None),
            SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.root_store()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("TLS to PostgreSQL: {e}"))?;
                if self.mode == SslMode::VerifyFull {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(Some(MakeRustlsConnect(Arc::new(config))))
    }

    fn root_store(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match self.roots.as_ref().unwrap_or(&Roots::System) {
            Roots::File(path) => {
                let shown = path.display();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("DATABASE_URL's sslrootcert: reading {shown}: {e}"))?;
                for cert in certs {
                    store.add(cert).map_err(|e| {
                        format!("DATABASE_URL's sslrootcert: {shown} holds a bad certificate: {e}")
                    })?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(format!(
                        "DATABASE_URL asks a verified TLS connection, but the system has no \
                         root certificates ({:?}): give sslrootcert=<PEM file>",
                        found.errors
                    ));
                }
            }
        }
        if store.is_empty() {
            return Err("DATABASE_URL's sslrootcert holds no certificate".into());
        }
        Ok(store)
    }
}

/// `require`: any certificate, as libpq's `require` without a root file; the handshake's
/// signatures are still checked, so the key exchange is with the holder of that certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain checked against the roots, the name not (WebPKI checks the chain
/// first, so a name mismatch is reported only for a chain that holds).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS connector over rustls, for every connection of a pool.
#[derive(Clone)]
pub struct MakeRustlsConnect(Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            name: ServerName::try_from(host)?.to_owned(),
            connector: tokio_rustls::TlsConnector::from(self.0.clone()),
        })
    }
}

/// One connection's handshake.
pub struct RustlsConnect {
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A connection over TLS.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, SslMode, Option<Roots>), String> {
        split_url(url).map(|(u, r)| (u, r.mode, r.roots))
    }

    #[test]
    fn sslmode_is_read_as_libpq_reads_it() {
        let base = "postgres://u:pw@db.internal:5432/kollus";
        assert_eq!(split(base), Ok((base.into(), SslMode::Off, None)));
        for (query, handed, mode) in [
            ("sslmode=disable", "sslmode=disable", SslMode::Off),
            ("sslmode=allow", "sslmode=disable", SslMode::Off),
            ("sslmode=prefer", "sslmode=prefer", SslMode::Off),
            ("sslmode=require", "sslmode=require", SslMode::Require),
            (
                "sslmode=verify-full",
                "sslmode=require",
                SslMode::VerifyFull,
            ),
        ] {
            let (url, m, roots) = split(&format!("{base}?{query}&connect_timeout=5")).unwrap();
            assert_eq!(url, format!("{base}?{handed}&connect_timeout=5"), "{query}");
            assert_eq!((m, roots), (mode, None), "{query}");
            // What is handed on parses.
            url.parse::<tokio_postgres::Config>().unwrap();
        }
        let (url, mode, roots) = split(&format!(
            "{base}?sslrootcert=%2Fetc%2Fca.pem&sslmode=require"
        ))
        .unwrap();
        assert_eq!(url, format!("{base}?sslmode=require"));
        assert_eq!(
            mode,
            SslMode::VerifyCa,
            "require with a root file checks it"
        );
        assert_eq!(roots, Some(Roots::File("/etc/ca.pem".into())));
        let (_, mode, roots) =
            split(&format!("{base}?sslmode=verify-full&sslrootcert=system")).unwrap();
        assert_eq!((mode, roots), (SslMode::VerifyFull, Some(Roots::System)));
        let (url, mode, _) = split(&format!("{base}?ssl%6Dode=verify-full")).unwrap();
        assert_eq!(
            (url, mode),
            (format!("{base}?sslmode=require"), SslMode::VerifyFull),
            "an encoded name is the name"
        );
        // key=value form: as it is.
        let kv = "host=db user=u sslmode=require";
        assert_eq!(split(kv), Ok((kv.into(), SslMode::Off, None)));
    }

    #[test]
    fn contradictions_are_refused_by_parameter_never_showing_the_url() {
        let base = "postgres://u:the-password@db/kollus";
        for (query, want) in [
            ("sslmode=verify", "sslmode \"verify\""),
            ("sslrootcert=/ca.pem", "asks no TLS"),
            ("sslmode=prefer&sslrootcert=/ca.pem", "asks no TLS"),
            ("sslmode=require&sslrootcert=system", "verify-full"),
            ("sslmode=verify-ca&sslrootcert=system", "verify-full"),
            ("sslmode=verify-ca", "needs sslrootcert"),
            ("sslmode=verify-full&sslrootcert=", "empty"),
        ] {
            let err = split(&format!("{base}?{query}")).unwrap_err();
            assert!(err.contains(want), "{query}: {err}");
            assert!(!err.contains("the-password"), "{err}");
        }
    }

    #[test]
    fn a_root_file_that_cannot_be_read_or_holds_nothing_is_refused() {
        let request = |path: &str| TlsRequest {
            mode: SslMode::VerifyFull,
            roots: Some(Roots::File(path.into())),
        };
        let err = request("/nonexistent/ca.pem").connector().err().unwrap();
        assert!(
            err.starts_with("DATABASE_URL's sslrootcert: reading /nonexistent/ca.pem"),
            "{err}"
        );
        let err = request("/etc/hostname").connector().err().unwrap();
        assert!(err.contains("no certificate"), "{err}");
        let off = TlsRequest {
            mode: SslMode::Off,
            roots: None,
        };
        assert!(off.connector().unwrap().is_none());
    }
}
