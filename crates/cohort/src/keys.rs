//! `cohort keys`: the organisation issuer, credentials for clients, nodes and provisioners,
//! revocation, and a CA with a broker certificate for the simple TLS path.
//!
//! Data (public keys, paths, the credential table) goes to stdout; what was done goes to
//! stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use cohort_keystore::KeyDir;
use cohort_security::Role;
use rand::RngCore;

use crate::output::Io;

const DEFAULT_DIR: &str = "/etc/cohort/keys";

/// Options of `cohort keys`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    /// The key directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR, global = true)]
    dir: PathBuf,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Create the directory and the organisation issuer (prints its public key).
    Init,
    /// Issue a key and credential for a client, node or provisioner.
    Issue {
        /// client, node or provisioner.
        #[arg(long)]
        role: Role,
        /// The holder: a node's identity (FQDN) or a user's login.
        #[arg(long)]
        name: String,
        /// Validity, e.g. 90d, 1y, 12h.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        valid: Duration,
    },
    /// Revoke credentials by serial or by file, and re-sign revoked.json.
    Revoke {
        /// Serial to revoke (repeatable).
        #[arg(long)]
        serial: Vec<String>,
        /// Credential file to revoke (repeatable).
        #[arg(long)]
        credential: Vec<PathBuf>,
    },
    /// Create a CA (once) and a broker TLS certificate for these host names or addresses.
    Tls {
        /// DNS name or IP address the broker is reached at (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// List the issued credentials.
    List,
}

fn now() -> i64 {
    cohort_proto::now_ms(SystemTime::now()) / 1000
}

pub(crate) fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

pub(crate) fn random_serial() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub(crate) fn run(args: KeysArgs, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    let keys = KeyDir::new(&args.dir);
    match args.command {
        KeysCommand::Init => {
            let public = keys.init(random_bytes(), now())?;
            writeln!(
                io.err,
                "issuer and an empty revocation list created in {}; keep issuer.seed offline and safe",
                args.dir.display()
            )?;
            writeln!(io.out, "{public}")?;
        }
        KeysCommand::Issue { role, name, valid } => {
            let secs = i64::try_from(valid.as_secs()).context("--valid is too long")?;
            let issued = keys.issue(&name, role, now(), secs, random_bytes(), random_serial())?;
            writeln!(
                io.err,
                "issued {} (serial {}), valid until {}; copy {} (mode 0600) and {} to the holder",
                issued.claims.caller(),
                issued.claims.serial,
                humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(issued.claims.not_after).unwrap_or(0))
                ),
                issued.key.display(),
                issued.credential.display(),
            )?;
            writeln!(io.out, "{}", issued.credential.display())?;
        }
        KeysCommand::Revoke { mut serial, credential } => {
            for path in &credential {
                serial.push(cohort_keystore::read_credential(path)?.claims.serial);
            }
            if serial.is_empty() {
                bail!("nothing to revoke: give --serial or --credential");
            }
            let list = keys.revoke(&serial, now())?;
            writeln!(
                io.err,
                "{} now lists {} revoked credential(s); distribute it to every node and client",
                keys.revocations_path().display(),
                list.claims.serials.len()
            )?;
        }
        KeysCommand::Tls { hosts } => {
            let (ca, cert, key) = keys.tls(&hosts)?;
            writeln!(
                io.err,
                "broker certificate for {} signed by {}",
                hosts.join(", "),
                ca.display()
            )?;
            writeln!(io.out, "{}\n{}\n{}", ca.display(), cert.display(), key.display())?;
        }
        KeysCommand::List => {
            let revoked = keys.revoked()?;
            for (path, credential) in keys.credentials()? {
                let claims = &credential.claims;
                let state = if revoked.contains(&claims.serial) {
                    "revoked"
                } else if claims.not_after < now() {
                    "expired"
                } else {
                    "valid"
                };
                writeln!(
                    io.out,
                    "{:<12} {:<40} {} {:<8} {}",
                    claims.role.as_str(),
                    claims.name,
                    claims.serial,
                    state,
                    path.display()
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
