//! Node configuration files (TOML), written by `caduceus cluster init`.
//! Relative paths are relative to the directory of the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use caduceus_engine::round::Genesis;
use caduceus_engine::ActorKey;
use serde::{Deserialize, Serialize};

use super::tls::Identity;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Shard,
}

/// A shard server as the coordinator knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardServer {
    pub name: String,
    pub address: SocketAddr,
    /// The shards it serves.
    pub ids: Vec<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub role: Role,
    /// Also the name its certificate is issued to.
    pub name: String,
    pub listen: SocketAddr,
    /// Data directory (one RocksDB store per shard, or the coordinator's log).
    pub data: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The cluster's shard count and genesis operators (hex actor keys): every node checks
    /// its stores against them.
    pub shard_count: u32,
    pub operators: Vec<String>,
    /// How many operators must agree to add an operator (1 if not given).
    #[serde(default = "one")]
    pub operator_quorum: u32,
    /// Shard servers only: the shards this one serves.
    #[serde(default)]
    pub ids: Vec<u32>,
    /// Coordinator only: where every shard is served.
    #[serde(default)]
    pub shard_servers: Vec<ShardServer>,
    /// Coordinator only: a fixed commit time in milliseconds since the epoch instead of the
    /// system clock (never earlier than the last block), for reproducible runs and replays.
    #[serde(default)]
    pub fixed_time: Option<u64>,
}

fn one() -> u32 {
    1
}

impl NodeConfig {
    /// A shard server's store of shard `id`, inside its data directory.
    pub fn shard_store(&self, id: u32) -> PathBuf {
        self.data.join(format!("shard-{id}"))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.data, &mut config.ca, &mut config.cert, &mut config.key] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let genesis = self.genesis()?;
        match self.role {
            Role::Shard => {
                if self.ids.is_empty() || self.ids.iter().any(|id| *id >= genesis.shards) {
                    bail!("{}: a shard server serves shard ids below shard_count = {}", self.name, genesis.shards);
                }
            }
            Role::Coordinator => {
                let mut served: Vec<u32> = self.shard_servers.iter().flat_map(|s| s.ids.clone()).collect();
                served.sort_unstable();
                if served != (0..genesis.shards).collect::<Vec<_>>() {
                    bail!("{}: shard_servers must serve every shard 0..{} exactly once", self.name, genesis.shards);
                }
            }
        }
        Ok(())
    }

    pub fn genesis(&self) -> Result<Genesis> {
        let operators = self
            .operators
            .iter()
            .map(|hex| ActorKey::from_hex(hex).with_context(|| format!("operator {hex}")))
            .collect::<Result<Vec<ActorKey>>>()?;
        if self.shard_count == 0 || self.shard_count > caduceus_engine::limits::SHARDS_MAX || operators.is_empty() {
            bail!("shard_count must be 1..=256 and there must be at least one operator");
        }
        let quorum = self.operator_quorum;
        if quorum == 0 || quorum as usize > operators.len() {
            bail!("operator_quorum must be between 1 and the number of operators");
        }
        Ok(Genesis { shards: self.shard_count, operators, quorum })
    }

    pub fn identity(&self) -> Result<Identity> {
        Identity::load(&self.cert, &self.key)
    }
}
