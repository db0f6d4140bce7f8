//! `caduceus keys`: the command line's keystore, so people and scripts sign as their own actors.
//!
//! One file per key, `NAME.key`, holding the ed25519 secret seed in hex, in a directory only
//! its owner may enter (0700), each file readable by its owner only (0600), as ssh keeps its
//! keys. Not encrypted under a passphrase: the command line signs in scripts, imports and the
//! demo, where no one is there to type one, and a passphrase kept beside the key would protect
//! nothing. What protects the keys is the file system's permissions (checked on every read:
//! a key file others may read is refused) and the disk's own encryption; an exchange keeps its
//! operators' keys in an HSM instead. The keystore is `--keystore DIR`, else
//! `$CADUCEUS_KEYSTORE`, else `~/.caduceus/keys`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caduceus_engine::model::{hex, ActorKey};
use caduceus_engine::signature::{actor_key, SigningKey};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum KeysAction {
    /// Make a new key from the system's random source and keep it under a name.
    New {
        /// The key's name in the keystore (letters, digits, `-`, `_`, `.`).
        name: String,
    },
    /// List the keystore's keys: name and actor key.
    List,
    /// Print a key's actor key (public), to register it; with `--secret`, its secret seed too,
    /// to move it to another keystore.
    Export {
        name: String,
        #[arg(long)]
        secret: bool,
    },
}

/// The keystore directory: `--keystore`, `$CADUCEUS_KEYSTORE`, or `~/.caduceus/keys`.
pub fn keystore(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os("CADUCEUS_KEYSTORE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("no --keystore, no $CADUCEUS_KEYSTORE and no $HOME")?;
    Ok(PathBuf::from(home).join(".caduceus").join("keys"))
}

fn check_name(name: &str) -> Result<()> {
    let fits = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(fits) || name.starts_with('.') {
        bail!("a key name is 1 to 64 letters, digits, '-', '_' or '.', not starting with '.': {name:?}");
    }
    Ok(())
}

fn key_path(dir: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    Ok(dir.join(format!("{name}.key")))
}

/// Makes a key under `name`; refuses to replace one.
pub fn new_key(dir: &Path, name: &str) -> Result<ActorKey> {
    let path = key_path(dir, name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating the keystore {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    caduceus_shards::local::new_key_file(&path)
}

/// The signing key kept under `name`, made first if there is none yet (the demo's and an
/// import's actors).
pub fn load_or_new(dir: &Path, name: &str) -> Result<SigningKey> {
    if !key_path(dir, name)?.exists() {
        new_key(dir, name)?;
    }
    load(dir, name)
}

/// The signing keys kept under `names`, those not there yet made first, all durable with one
/// sync (an import's actors).
pub fn load_or_new_many(dir: &Path, names: &[&str]) -> Result<Vec<SigningKey>> {
    let mut missing = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let path = key_path(dir, name)?;
        if seen.insert(*name) && !path.exists() {
            missing.push(path);
        }
    }
    if !missing.is_empty() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the keystore {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        caduceus_shards::local::new_key_files(&missing)?;
    }
    names.iter().map(|name| load(dir, name)).collect()
}

/// The signing key kept under `name`. A key file that others may read is refused.
pub fn load(dir: &Path, name: &str) -> Result<SigningKey> {
    let path = key_path(dir, name)?;
    let metadata = std::fs::metadata(&path).with_context(|| format!("no key {name:?} in {}", dir.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} may be read by others (mode {:o}): run `chmod 600` on it",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
    caduceus_shards::local::read_key_file(&path)
}

/// Every key's name and actor key, by name.
pub fn list(dir: &Path) -> Result<Vec<(String, ActorKey)>> {
    let mut keys = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(name) = name.strip_suffix(".key") {
            // One unreadable key (a bad name, loose permissions) does not hide the others.
            match load(dir, name) {
                Ok(key) => keys.push((name.to_owned(), actor_key(&key))),
                Err(error) => eprintln!("skipping {name}: {error:#}"),
            }
        }
    }
    keys.sort();
    Ok(keys)
}

pub fn command(dir: &Path, action: KeysAction) -> Result<()> {
    match action {
        KeysAction::New { name } => {
            let actor = new_key(dir, &name)?;
            println!("{name} {actor}");
            println!(
                "kept in {} (mode 0600); register its actor key with an operator",
                key_path(dir, &name)?.display()
            );
        }
        KeysAction::List => {
            for (name, actor) in list(dir)? {
                println!("{name} {actor}");
            }
        }
        KeysAction::Export { name, secret } => {
            let key = load(dir, &name)?;
            println!("actor:  {}", actor_key(&key));
            if secret {
                println!("secret: {}", hex(&key.to_bytes()));
            }
        }
    }
    Ok(())
}
