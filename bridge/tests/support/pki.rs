//! Certificates made at test time: a CA, a server certificate for `localhost` and 127.0.0.1,
//! a client certificate, and a second, unrelated CA with its own client certificate (what a
//! client or broker that must not be trusted presents). Written as PEM files into a directory
//! readable by other users, since Mosquitto drops root privileges before reading some of them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An unrelated CA, and a client certificate it signed.
    pub rogue_ca: PathBuf,
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

fn ca(name: &str) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
    (ca, ca_key): &(Certificate, KeyPair),
) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![purpose];
    (p.signed_by(&key, ca, ca_key).unwrap(), key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        let root = ca("edge-bridge test CA");
        let (server, server_key) = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &root,
        );
        let (client, client_key) = leaf(&["sensor-1"], ExtendedKeyUsagePurpose::ClientAuth, &root);
        let rogue = ca("someone else's CA");
        let (rogue_client, rogue_client_key) =
            leaf(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth, &rogue);
        Pki {
            ca: write(d, "ca.pem", &root.0.pem()),
            server_cert: write(d, "server.pem", &server.pem()),
            server_key: write(d, "server.key", &server_key.serialize_pem()),
            client_cert: write(d, "client.pem", &client.pem()),
            client_key: write(d, "client.key", &client_key.serialize_pem()),
            rogue_ca: write(d, "rogue-ca.pem", &rogue.0.pem()),
            rogue_client_cert: write(d, "rogue-client.pem", &rogue_client.pem()),
            rogue_client_key: write(d, "rogue-client.key", &rogue_client_key.serialize_pem()),
            dir,
        }
    }

    /// A Mosquitto password file made by Debian's `mosquitto_passwd`, in this directory.
    pub fn password_file(&self, users: &[(&str, &str)]) -> PathBuf {
        let p = self.dir.path().join("passwords");
        for (i, (user, password)) in users.iter().enumerate() {
            let mut cmd = std::process::Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let status = cmd
                .arg("-b")
                .arg(&p)
                .args([user, password])
                .status()
                .expect(
                    "mosquitto_passwd (Debian's mosquitto package; scripts/test.sh installs it)",
                );
            assert!(status.success());
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }
}
