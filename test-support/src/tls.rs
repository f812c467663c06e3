//! TLS for the tests: a certificate authority made by the test (never a real one), and a
//! server certificate it signed for `127.0.0.1` and `localhost`, in PEM files, made with the
//! `openssl` command (OpenSSL 3; what `scripts/kafka.sh run --sasl-ssl` and librdkafka read).

use std::path::PathBuf;
use std::process::Command;

/// A test CA and the broker certificate it signed, in a directory of the test's own (removed
/// when dropped): `ca.crt`, `server.crt` and `server.key` (unencrypted PKCS#8), the layout
/// `scripts/kafka.sh run --sasl-ssl PORT DIR` reads (with a `users` file of the test's).
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// A new CA (a key of its own: another `TestCa` is a CA a client must not trust for this
    /// one's server) and a server certificate for 127.0.0.1/localhost, valid for two days.
    /// Panics naming the openssl step that failed.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("kollus-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("creating the test CA's directory");
        let ca = Self { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=kollus test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            ca.dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("writing the certificate's extensions");
        ca.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        ca
    }

    /// The CA's certificate (PEM): what a client trusts (`KAFKA_SSL_CA_LOCATION`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A file of this directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
