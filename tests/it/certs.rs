//! Throwaway certificates for the TLS tests, made with Debian's `openssl` CLI: a CA, a
//! server certificate for 127.0.0.1 and localhost, and client certificates carrying a URI
//! SAN, a DNS SAN or only a CN, one expired, one from a CA the server does not trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A directory of PEM files.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

/// Whether `openssl` runs; under `CI=true` a missing one fails the test.
pub fn available(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: openssl is required in CI (apt-get install -y openssl)"
        );
        eprintln!("SKIP {test}: openssl not installed");
    }
    ok
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl Certs {
    /// A CA named `ca` and a server certificate signed by it.
    pub fn new() -> Self {
        let c = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        c.ca("ca");
        c.ca("rogue-ca");
        c.server("server", "ca");
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read pem")
    }

    /// A self-signed CA: `{name}.pem`, `{name}.key`.
    pub fn ca(&self, name: &str) {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN=permitd test {name}"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(EC);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "7",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(self.dir.path(), &args);
    }

    /// A leaf `{name}.pem`/`{name}.key` signed by `ca`, with extensions `ext` and `days`
    /// of validity (negative: already expired).
    pub fn leaf(&self, name: &str, ca: &str, cn: &str, ext: &str, days: i32) {
        let dir = self.dir.path();
        let (key, csr, pem, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extf), ext).expect("ext file");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req"];
        args.extend(EC);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        run(dir, &args);
        let (ca_pem, ca_key, days) = (format!("{ca}.pem"), format!("{ca}.key"), days.to_string());
        // Distinct serials within one CA (clients would see a reused one as a forgery).
        let serial = SERIAL
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        run(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                &days,
                "-extfile",
                &extf,
                "-out",
                &pem,
            ],
        );
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str, ca: &str) {
        self.leaf(
            name,
            ca,
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
            7,
        );
    }

    /// A client certificate: `san` is an extension value (`URI:spiffe://...`, `DNS:x`) or
    /// empty for a CN-only certificate.
    pub fn client(&self, name: &str, ca: &str, cn: &str, san: &str, days: i32) {
        let mut ext = String::from(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        if !san.is_empty() {
            ext.push_str(&format!("subjectAltName={san}\n"));
        }
        self.leaf(name, ca, cn, &ext, days);
    }
}
