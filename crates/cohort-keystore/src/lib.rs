//! Reading and writing Cohort's security files: private keys (0600, and refused when group or
//! others can read them), public keys, credentials, revocation lists, and the policy
//! directory. The adapter between the pure `cohort-security` core and the file system.
//!
//! Every error names the file and says what to do about it.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cohort_security::{
    Authorizer, Credential, Decision, Groups, KeyKind, Policy, PublicKey, RevocationList,
    SecretKey, Signer, Trust,
};

/// A security file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A private key others can read.
    #[error(
        "private key {path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not what the file should hold.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Would overwrite an existing file (keys are never replaced silently).
    #[error("{path} already exists; refusing to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io { path: path.to_owned(), source }
}

fn invalid(path: &Path, message: impl ToString) -> KeystoreError {
    KeystoreError::Invalid { path: path.to_owned(), message: message.to_string() }
}

/// Reads a private key, refusing a file that group or others may read.
pub fn read_secret_key(path: &Path, kind: KeyKind) -> Result<SecretKey, KeystoreError> {
    let metadata = fs::metadata(path).map_err(io(path))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::Exposed { path: path.to_owned(), mode });
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    SecretKey::from_seed(kind, text.trim()).map_err(|err| invalid(path, err))
}

/// Writes a private key with mode 0600, never replacing an existing file.
pub fn write_secret_key(path: &Path, key: &SecretKey) -> Result<(), KeystoreError> {
    write_new(path, &format!("{}\n", key.seed()), 0o600)
}

/// Writes `text` to a new file with `mode`.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), KeystoreError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeystoreError::Exists { path: path.to_owned() },
            _ => KeystoreError::Io { path: path.to_owned(), source },
        })?;
    file.write_all(text.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Replaces `path` atomically with `text` (for lists that are rewritten, like revocations).
pub fn replace(path: &Path, text: &str, mode: u32) -> Result<(), KeystoreError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, text, mode)?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a public key: the text itself, or a file holding it.
pub fn read_public_key(text_or_path: &str, kind: KeyKind) -> Result<PublicKey, KeystoreError> {
    if let Ok(key) = PublicKey::parse(kind, text_or_path) {
        return Ok(key);
    }
    let path = Path::new(text_or_path);
    let text = fs::read_to_string(path).map_err(io(path))?;
    PublicKey::parse(kind, text.trim()).map_err(|err| invalid(path, err))
}

/// Reads a credential file.
pub fn read_credential(path: &Path) -> Result<Credential, KeystoreError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|err| invalid(path, format!("not a credential: {err}")))
}

/// Reads a key and its credential and checks they belong together.
pub fn read_signer(key: &Path, credential: &Path) -> Result<Signer, KeystoreError> {
    let secret = read_secret_key(key, KeyKind::Member)?;
    let credential = read_credential(credential)?;
    Signer::new(secret, credential).map_err(|err| invalid(key, err))
}

/// Reads a revocation list.
pub fn read_revocations(path: &Path) -> Result<RevocationList, KeystoreError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|err| invalid(path, format!("not a revocation list: {err}")))
}

/// Builds the trust: issuers (keys or files holding them) and an optional revocation list,
/// which must be signed by one of them.
pub fn read_trust(issuers: &[String], revocations: Option<&Path>) -> Result<Trust, KeystoreError> {
    let mut keys = Vec::new();
    for issuer in issuers {
        keys.push(read_public_key(issuer, KeyKind::Issuer)?);
    }
    let mut trust = Trust::new(keys);
    if let Some(path) = revocations {
        let list = read_revocations(path)?;
        trust.revoke(&list).map_err(|err| invalid(path, err))?;
    }
    Ok(trust)
}

/// Reads the policy directory: `<agent>.policy` files and the optional `groups` file. A file
/// that does not parse is reported and its agent denied everything (fail closed).
pub fn read_policies(
    dir: &Path,
    defaults: HashMap<String, Decision>,
    fallback: Option<Decision>,
) -> (Authorizer, Vec<KeystoreError>) {
    let mut errors = Vec::new();
    let groups_path = dir.join("groups");
    let groups = match fs::read_to_string(&groups_path) {
        Ok(text) => Groups::parse(&text).unwrap_or_else(|err| {
            errors.push(invalid(&groups_path, err));
            Groups::default()
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Groups::default(),
        Err(source) => {
            errors.push(KeystoreError::Io { path: groups_path, source });
            Groups::default()
        }
    };
    let mut policies = HashMap::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return (Authorizer::new(policies, defaults, fallback), errors);
        }
        Err(source) => {
            errors.push(KeystoreError::Io { path: dir.to_owned(), source });
            return (Authorizer::new(policies, defaults, fallback), errors);
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(agent) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".policy"))
        else {
            continue;
        };
        let policy = fs::read_to_string(&path)
            .map_err(io(&path))
            .and_then(|text| Policy::parse(&text, &groups).map_err(|err| invalid(&path, err)));
        match policy {
            Ok(policy) => {
                policies.insert(agent.to_owned(), policy);
            }
            Err(err) => {
                errors.push(err);
                policies.insert(agent.to_owned(), Policy::deny_all());
            }
        }
    }
    (Authorizer::new(policies, defaults, fallback), errors)
}

/// The directory `cohort keys` manages (default `/etc/cohort/keys`):
///
/// - `issuer.seed` (0600) and `issuer.pub`: the organisation issuer;
/// - `<role>.<name>.seed` (0600) and `<role>.<name>.cred`: issued identities;
/// - `revoked.json`: the signed revocation list;
/// - `ca.pem`, `ca.key` (0600), `broker.pem`, `broker.key` (0600): TLS for the broker.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

/// What `KeyDir::issue` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The private key file.
    pub key: PathBuf,
    /// The credential file.
    pub credential: PathBuf,
    /// The credential.
    pub claims: cohort_security::Claims,
}

impl KeyDir {
    /// The directory at `dir` (not created until [`KeyDir::init`]).
    pub fn new(dir: impl Into<PathBuf>) -> KeyDir {
        KeyDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The issuer's public key file.
    pub fn issuer_public_path(&self) -> PathBuf {
        self.dir.join("issuer.pub")
    }

    /// The revocation list file.
    pub fn revocations_path(&self) -> PathBuf {
        self.dir.join("revoked.json")
    }

    /// Creates the directory (0700), a new issuer from `random` and an empty revocation list
    /// signed by it at `now`, so a configuration naming `revoked.json` works from the first
    /// day. Refuses to replace an issuer.
    pub fn init(&self, random: [u8; 32], now: i64) -> Result<PublicKey, KeystoreError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(io(&self.dir))?;
        let issuer = SecretKey::generate(KeyKind::Issuer, random);
        write_secret_key(&self.dir.join("issuer.seed"), &issuer)?;
        write_new(&self.issuer_public_path(), &format!("{}\n", issuer.public()), 0o644)?;
        self.write_revocations(&RevocationList::sign(&issuer, now, Vec::new()))?;
        Ok(issuer.public().clone())
    }

    /// The issuer's private key.
    pub fn issuer(&self) -> Result<SecretKey, KeystoreError> {
        read_secret_key(&self.dir.join("issuer.seed"), KeyKind::Issuer)
    }

    /// Issues a credential for `name` in `role`, valid from `now` for `valid_secs`, with a new
    /// key from `random` and the serial `serial`.
    pub fn issue(
        &self,
        name: &str,
        role: cohort_security::Role,
        now: i64,
        valid_secs: i64,
        random: [u8; 32],
        serial: String,
    ) -> Result<Issued, KeystoreError> {
        let issuer = self.issuer()?;
        let key = SecretKey::generate(KeyKind::Member, random);
        let base = format!("{role}.{name}");
        let key_path = self.dir.join(format!("{base}.seed"));
        let cred_path = self.dir.join(format!("{base}.cred"));
        // Backdated a minute so a node whose clock is slightly behind accepts it at once.
        let credential = Credential::issue(
            &issuer,
            name,
            role,
            key.public(),
            serial,
            now - 60,
            now.saturating_add(valid_secs),
        )
        .map_err(|err| invalid(&cred_path, err))?;
        if cred_path.exists() {
            return Err(KeystoreError::Exists { path: cred_path });
        }
        write_secret_key(&key_path, &key)?;
        write_new(&cred_path, &format!("{}\n", credential.to_json()), 0o644)?;
        Ok(Issued { key: key_path, credential: cred_path, claims: credential.claims })
    }

    /// Every credential in the directory, sorted by file name.
    pub fn credentials(&self) -> Result<Vec<(PathBuf, Credential)>, KeystoreError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "cred") {
                found.push((path.clone(), read_credential(&path)?));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The current revocation list, empty when there is none.
    pub fn revoked(&self) -> Result<Vec<String>, KeystoreError> {
        let path = self.revocations_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read_revocations(&path)?.claims.serials)
    }

    /// Adds `serials` to the revocation list and re-signs it.
    pub fn revoke(&self, serials: &[String], now: i64) -> Result<RevocationList, KeystoreError> {
        let issuer = self.issuer()?;
        let mut all = self.revoked()?;
        all.extend(serials.iter().cloned());
        let list = RevocationList::sign(&issuer, now, all);
        self.write_revocations(&list)?;
        Ok(list)
    }

    fn write_revocations(&self, list: &RevocationList) -> Result<(), KeystoreError> {
        let text = serde_json::to_string_pretty(list).unwrap_or_default();
        replace(&self.revocations_path(), &format!("{text}\n"), 0o644)
    }

    /// The trust this directory's issuer and revocation list give.
    pub fn trust(&self) -> Result<Trust, KeystoreError> {
        let path = self.revocations_path();
        let revocations = path.exists().then_some(path.as_path());
        read_trust(&[self.issuer_public_path().display().to_string()], revocations)
    }

    /// Creates a CA (once) and a broker certificate for `hosts` (DNS names or IP addresses),
    /// replacing an older broker certificate. Returns the CA, certificate and key paths.
    pub fn tls(&self, hosts: &[String]) -> Result<(PathBuf, PathBuf, PathBuf), KeystoreError> {
        let ca_path = self.dir.join("ca.pem");
        let ca_key_path = self.dir.join("ca.key");
        let tls_err = |path: &Path| {
            let path = path.to_owned();
            move |err: rcgen::Error| KeystoreError::Invalid { path, message: err.to_string() }
        };
        let ca_params = || {
            let mut params = rcgen::CertificateParams::default();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, "Cohort CA");
            params
        };
        let ca_key = if ca_key_path.exists() {
            let pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            rcgen::KeyPair::from_pem(&pem).map_err(tls_err(&ca_key_path))?
        } else {
            let key = rcgen::KeyPair::generate().map_err(tls_err(&ca_key_path))?;
            let cert = ca_params().self_signed(&key).map_err(tls_err(&ca_path))?;
            write_new(&ca_key_path, &key.serialize_pem(), 0o600)?;
            write_new(&ca_path, &cert.pem(), 0o644)?;
            key
        };
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let cert_path = self.dir.join("broker.pem");
        let key_path = self.dir.join("broker.key");
        let params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(tls_err(&cert_path))?;
        let key = rcgen::KeyPair::generate().map_err(tls_err(&key_path))?;
        let cert = params.signed_by(&key, &issuer).map_err(tls_err(&cert_path))?;
        replace(&key_path, &key.serialize_pem(), 0o600)?;
        replace(&cert_path, &cert.pem(), 0o644)?;
        Ok((ca_path, cert_path, key_path))
    }
}

#[cfg(test)]
mod tests {
    use cohort_security::Role;

    use super::*;

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.seed");
        let key = SecretKey::generate(KeyKind::Member, [1; 32]);
        write_secret_key(&path, &key).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(write_secret_key(&path, &key), Err(KeystoreError::Exists { .. })));
        assert_eq!(read_secret_key(&path, KeyKind::Member).unwrap().public(), key.public());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_key(&path, KeyKind::Member).unwrap_err().to_string();
        assert!(err.contains("readable by group or others (mode 0644)"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_secret_key(&path, KeyKind::Issuer).unwrap_err().to_string();
        assert!(err.contains("a.seed"), "{err}");
    }

    #[test]
    fn signer_and_trust_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let org = SecretKey::generate(KeyKind::Issuer, [1; 32]);
        let key = SecretKey::generate(KeyKind::Member, [2; 32]);
        let cred =
            Credential::issue(&org, "n1", Role::Node, key.public(), "s1".into(), 0, 10).unwrap();
        write_secret_key(&dir.path().join("n1.seed"), &key).unwrap();
        write_new(&dir.path().join("n1.cred"), &cred.to_json(), 0o644).unwrap();
        let signer = read_signer(&dir.path().join("n1.seed"), &dir.path().join("n1.cred")).unwrap();
        assert_eq!(signer.caller(), "node=n1");
        let other = SecretKey::generate(KeyKind::Member, [3; 32]);
        write_secret_key(&dir.path().join("other.seed"), &other).unwrap();
        let err = read_signer(&dir.path().join("other.seed"), &dir.path().join("n1.cred"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match the credential"), "{err}");
        let revoked = RevocationList::sign(&org, 5, vec!["s1".into()]);
        let list = dir.path().join("revoked.json");
        replace(&list, &serde_json::to_string(&revoked).unwrap(), 0o644).unwrap();
        let trust = read_trust(&[org.public().as_str().to_owned()], Some(&list)).unwrap();
        assert!(trust.verify(&cred, 5).is_err());
        let err = read_trust(&["nonsense".to_owned()], None).unwrap_err().to_string();
        assert!(err.contains("nonsense"), "{err}");
    }

    #[test]
    fn broken_policy_denies_its_agent() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("deploy.policy"), "allow *\n").unwrap();
        fs::write(dir.path().join("good.policy"), "allow\t*\t*\t*\n").unwrap();
        let (auth, errors) = read_policies(dir.path(), HashMap::new(), Some(Decision::Allow));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("deploy.policy: line 1"), "{}", errors[0]);
        let facts = serde_json::Map::new();
        let node = cohort_filter_node(&facts);
        assert_eq!(auth.authorize("deploy", "client=a", "x", &node).decision, Decision::Deny);
        assert_eq!(auth.authorize("good", "client=a", "x", &node).decision, Decision::Allow);
    }

    fn cohort_filter_node(
        facts: &serde_json::Map<String, serde_json::Value>,
    ) -> cohort_security::policy::NodeView<'_> {
        cohort_security::policy::NodeView { identity: "n", facts, classes: &[], agents: &[] }
    }
}
