//! A test PKI made with the `openssl` CLI: a CA and leaf certificates for `localhost` it
//! signs, in a temporary directory (shared by `tests/tls.rs` and the Chromium test in
//! `tests/clients/tls_h2.rs`). A missing `openssl` fails the test naming it.

use std::path::PathBuf;
use std::process::Command;

pub fn require_tools() {
    let mut openssl = Command::new("openssl");
    openssl.arg("version");
    testkit::require("openssl", "apt-get install openssl", openssl);
    let mut curl = Command::new("curl");
    curl.arg("--version");
    testkit::require("curl", "apt-get install curl", curl);
}

/// A temporary directory with a test CA and leaf certificates for `localhost` signed by it.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        require_tools();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=gateway-test-CA",
        );
        std::fs::write(
            pki.path("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl` with `args` (split at whitespace) in the directory.
    pub fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    /// A new leaf `name.pem` (the leaf, then the CA: a chain) and `name.key`; a new serial.
    pub fn leaf(&self, name: &str) {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        self.openssl(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} -out {csr} \
             -subj /CN=localhost"
        ));
        let serial = rand::random::<u64>() >> 1;
        self.openssl(&format!(
            "x509 -req -in {csr} -CA ca.pem -CAkey ca.key -set_serial 0x{serial:x} -days 2 \
             -extfile leaf.ext -out {crt}"
        ));
        let chain = [
            std::fs::read(self.path(&crt)).unwrap(),
            std::fs::read(self.path("ca.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(self.path(&format!("{name}.pem")), chain).unwrap();
    }

    /// Installs leaf `name` as the served pair (`server.pem`, `server.key`), each file
    /// replaced in one rename.
    pub fn install(&self, name: &str) {
        for ext in ["pem", "key"] {
            let tmp = self.path(&format!("server.{ext}.tmp"));
            std::fs::copy(self.path(&format!("{name}.{ext}")), &tmp).unwrap();
            std::fs::rename(&tmp, self.path(&format!("server.{ext}"))).unwrap();
        }
    }

    /// The DER of leaf `name`'s certificate.
    pub fn der(&self, name: &str) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(self.path(&format!("{name}.crt")))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    pub fn tls_section(&self, extra: &str) -> String {
        format!(
            "\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// The base64 SHA-256 of leaf `name`'s public key (SPKI), as Chromium's
    /// `--ignore-certificate-errors-spki-list` pins it.
    pub fn spki(&self, name: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -pubkey -noout -in {name}.crt | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | base64"
            ))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}
