//! A cluster on this machine: `caduceus cluster init | up | status | down`.
//!
//! `init` writes a directory with the cluster CA, one certificate and key per
//! node, and one config file per node (ports on 127.0.0.1). `up` starts every
//! node as its own process, waits until the coordinator reports every shard
//! healthy, prints the client address first, and stops them all on Ctrl-C or
//! SIGTERM. `status` and `down` find the processes by their pid files.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use caduceus_engine::ActorKey;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::config::{NodeConfig, Role, ShardServer};
use super::tls;

/// The list of a cluster's nodes, in start order (shard servers first).
#[derive(Serialize, Deserialize)]
struct Manifest {
    nodes: Vec<String>,
}

pub struct InitOptions {
    pub dir: PathBuf,
    pub shards: u32,
    /// Shard server processes; shards are dealt to them in turn.
    pub servers: u32,
    /// The coordinator's client port; shard servers take the ports after it. 0: free ports.
    pub base_port: u16,
    pub operators: Vec<ActorKey>,
    /// How many operators must agree to add an operator.
    pub operator_quorum: u32,
    pub fixed_time: Option<u64>,
    /// DNS names or IP addresses every node's certificate also names, for a deployment
    /// across machines.
    pub hosts: Vec<String>,
    /// Where the CA's private key goes: apart from the nodes, which never need it (default:
    /// `DIR.ca.key` beside the cluster directory).
    pub ca_key: Option<PathBuf>,
}

/// Where `init` writes the CA's private key by default: beside the cluster directory, not in it.
pub fn default_ca_key(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "cluster".into());
    name.push(".ca.key");
    dir.with_file_name(name)
}

/// Where `cluster init` writes the operator key it generates: beside the cluster directory,
/// like the CA key, never among the nodes' files.
pub fn default_operator_key(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_else(|| "cluster".into());
    name.push(".operator.key");
    dir.with_file_name(name)
}

/// Generates a signing key from the system's secure random source, writes it (64 hex digits,
/// mode 0600, never over an existing file) to `path`, and returns its public key: a cluster's
/// generated operator key, and each key of the command line's keystore.
pub fn new_key_file(path: &Path) -> Result<ActorKey> {
    let seed = random_seed()?;
    write_private(path, &format!("{}\n", caduceus_engine::model::hex(&seed)))?;
    Ok(caduceus_engine::signature::actor_key(&caduceus_engine::signature::signing_key(seed)))
}

/// A signing key's seed from the system's secure random source.
fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(seed)
}

/// Makes a signing key in each of `paths` (none may exist yet), made durable together: each
/// file is written, then the file system is synced once (`syncfs`) rather than once per file,
/// since an import may make tens of thousands of keys.
pub fn new_key_files(paths: &[PathBuf]) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Some(first) = paths.first() else { return Ok(()) };
    for path in paths {
        write_private_unsynced(path, &format!("{}\n", caduceus_engine::model::hex(&random_seed()?)))?;
    }
    let dir = first.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let handle = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs takes an open file descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("syncing the keys in {}", dir.display()));
    }
    handle.sync_all()?;
    Ok(())
}

/// The operator key `cluster init` generated for the cluster whose CA is `ca` (the cluster
/// directory's `ca.pem`), if there is one: `submit` and `loadgen` sign the workload's
/// registrations with it.
pub fn operator_key(ca: &Path) -> Result<Option<caduceus_engine::signature::SigningKey>> {
    let Some(dir) = ca.parent().filter(|dir| !dir.as_os_str().is_empty()) else { return Ok(None) };
    let path = default_operator_key(dir);
    if !path.exists() {
        return Ok(None);
    }
    read_key_file(&path).map(Some)
}

/// The signing key in a file `new_key_file` wrote.
pub fn read_key_file(path: &Path) -> Result<caduceus_engine::signature::SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed = caduceus_engine::model::unhex(text.trim())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .with_context(|| format!("{} does not hold a signing key (64 hex digits)", path.display()))?;
    Ok(caduceus_engine::signature::signing_key(seed))
}

/// A free port, and the socket that holds it until `init` has chosen every port (so one
/// cluster's nodes never get the same one). Another process may still take it before the node
/// binds it: the node then exits saying so, and its starter picks again.
fn free_port(held: &mut Vec<UdpSocket>) -> Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    held.push(socket);
    Ok(port)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    write_private_unsynced(path, text)?.sync_all()?;
    Ok(())
}

/// A new file readable by its owner only, written but not yet synced.
fn write_private_unsynced(path: &Path, text: &str) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(file)
}

pub fn init(options: &InitOptions) -> Result<()> {
    let dir = &options.dir;
    if dir.join("cluster.toml").exists() {
        bail!("{} already holds a cluster", dir.display());
    }
    if options.servers == 0 || options.servers > options.shards {
        bail!("there must be between 1 and {} shard servers", options.shards);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca, issuer) = tls::new_ca(tls::CA_NAME)?;
    std::fs::write(dir.join("ca.pem"), &ca.cert)?;
    let ca_key = options.ca_key.clone().unwrap_or_else(|| default_ca_key(dir));
    write_private(&ca_key, &ca.key)?;
    let mut held = Vec::new();
    let mut port = |offset: u16| -> Result<u16> {
        if options.base_port == 0 {
            free_port(&mut held)
        } else {
            options.base_port.checked_add(offset).context("port numbers run past 65535")
        }
    };
    let operators: Vec<String> = options.operators.iter().map(|k| k.to_string()).collect();
    let node = |role: Role, name: &str, listen: SocketAddr, ids: Vec<u32>| -> Result<NodeConfig> {
        let role_name = match role {
            Role::Coordinator => tls::COORDINATOR_NAME,
            Role::Shard => tls::SHARD_SERVER_NAME,
        };
        let issued = tls::new_node(name, role_name, &options.hosts, &issuer)?;
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert)?;
        write_private(&dir.join(format!("{name}.key")), &issued.key)?;
        Ok(NodeConfig {
            role,
            name: name.into(),
            listen,
            data: PathBuf::from("data").join(name),
            ca: "ca.pem".into(),
            cert: format!("{name}.pem").into(),
            key: format!("{name}.key").into(),
            shard_count: options.shards,
            operators: operators.clone(),
            operator_quorum: options.operator_quorum,
            ids,
            shard_servers: Vec::new(),
            fixed_time: None,
        })
    };
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    let coordinator_port = port(0)?;
    for server in 0..options.servers {
        let name = format!("shard-{server}");
        let ids: Vec<u32> = (0..options.shards).filter(|id| id % options.servers == server).collect();
        let listen = SocketAddr::from(([127, 0, 0, 1], port(1 + server as u16)?));
        servers.push(ShardServer { name: name.clone(), address: listen, ids: ids.clone() });
        nodes.push(node(Role::Shard, &name, listen, ids)?);
    }
    let mut coordinator =
        node(Role::Coordinator, "coordinator", SocketAddr::from(([127, 0, 0, 1], coordinator_port)), Vec::new())?;
    coordinator.shard_servers = servers;
    coordinator.fixed_time = options.fixed_time;
    nodes.push(coordinator);
    for config in &nodes {
        std::fs::write(dir.join(format!("{}.toml", config.name)), toml::to_string(config)?)?;
    }
    let manifest = Manifest { nodes: nodes.iter().map(|n| n.name.clone()).collect() };
    std::fs::write(dir.join("cluster.toml"), toml::to_string(&manifest)?)?;
    println!("cluster of {} shards on {} shard servers in {}", options.shards, options.servers, dir.display());
    for config in &nodes {
        println!("  {:<12} {:<11} {}", config.name, format!("{:?}", config.role).to_lowercase(), config.listen);
    }
    println!("client address: {}", nodes.last().expect("a coordinator").listen);
    println!("the CA's private key is in {} (mode 0600): no node needs it; keep it offline", ca_key.display());
    Ok(())
}

/// What `add_node` issues.
pub struct AddNode {
    /// The cluster directory (its `ca.pem` is the CA).
    pub dir: PathBuf,
    /// The node's name: its files are `NAME.pem` and `NAME.key` in `dir`.
    pub name: String,
    pub role: Role,
    /// DNS names or IP addresses the node is reached at.
    pub hosts: Vec<String>,
    /// The CA's private key, kept apart (default: `DIR.ca.key`).
    pub ca_key: Option<PathBuf>,
}

/// Issues a certificate for one more node (a shard server replaced, or moved to another
/// machine) with the CA key `init` wrote apart, checked against the cluster's `ca.pem` as the
/// node's peers will check it. Writing the node's configuration is the deployment's.
pub fn add_node(options: &AddNode) -> Result<()> {
    let dir = &options.dir;
    let (cert_path, key_path) = (dir.join(format!("{}.pem", options.name)), dir.join(format!("{}.key", options.name)));
    if cert_path.exists() || key_path.exists() {
        bail!("{} already holds a node named {}", dir.display(), options.name);
    }
    let ca_pem_path = dir.join("ca.pem");
    let ca_key = options.ca_key.clone().unwrap_or_else(|| default_ca_key(dir));
    let key_pem = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("reading the CA's private key {}", ca_key.display()))?;
    let issuer = tls::ca_issuer(tls::CA_NAME, &key_pem)?;
    let role_name = match options.role {
        Role::Coordinator => tls::COORDINATOR_NAME,
        Role::Shard => tls::SHARD_SERVER_NAME,
    };
    let issued = tls::new_node(&options.name, role_name, &options.hosts, &issuer)?;
    let roots = tls::roots(&ca_pem_path).with_context(|| format!("reading the CA {}", ca_pem_path.display()))?;
    tls::check_node(roots, &issued.cert, role_name).with_context(|| {
        format!(
            "{} is not the private key of {}: a certificate issued with it is refused",
            ca_key.display(),
            ca_pem_path.display()
        )
    })?;
    std::fs::write(&cert_path, &issued.cert)?;
    write_private(&key_path, &issued.key)?;
    println!("issued {} ({role_name}) and its key {} (mode 0600)", cert_path.display(), key_path.display());
    Ok(())
}

fn nodes(dir: &Path) -> Result<Vec<(PathBuf, NodeConfig)>> {
    let manifest_path = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("{} holds no cluster (run `caduceus cluster init`)", dir.display()))?;
    let manifest: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", manifest_path.display()))?;
    manifest
        .nodes
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.toml"));
            Ok((path.clone(), NodeConfig::load(&path)?))
        })
        .collect()
}

/// Where a local cluster's stores are: the coordinator's data directory, and each shard's
/// (by shard id), as its nodes' configurations name them.
pub fn stores(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let mut coordinator = None;
    let mut shards: Vec<Option<PathBuf>> = Vec::new();
    for (path, config) in nodes(dir)? {
        match config.role {
            Role::Coordinator => coordinator = Some(config.data),
            Role::Shard => {
                shards.resize(config.shard_count as usize, None);
                for &id in &config.ids {
                    let slot = shards
                        .get_mut(id as usize)
                        .with_context(|| format!("{} names shard {id} of {}", path.display(), config.shard_count))?;
                    *slot = Some(config.shard_store(id));
                }
            }
        }
    }
    let coordinator = coordinator.with_context(|| format!("{} names no coordinator", dir.display()))?;
    let shards = shards
        .into_iter()
        .enumerate()
        .map(|(id, path)| path.with_context(|| format!("no node of {} holds shard {id}", dir.display())))
        .collect::<Result<_>>()?;
    Ok((coordinator, shards))
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("run").join(format!("{name}.pid"))
}

fn read_pid(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(pid_file(dir, name)).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: sending a signal to a process we started.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The coordinator's client address and the CA file of the cluster in `dir`.
pub fn client_target(dir: &Path) -> Result<(SocketAddr, PathBuf)> {
    let nodes = nodes(dir)?;
    let (_, coordinator) =
        nodes.iter().find(|(_, n)| n.role == Role::Coordinator).context("the cluster has no coordinator")?;
    Ok((coordinator.listen, coordinator.ca.clone()))
}

/// The clock a cluster's clients sign with: the coordinator's fixed time if the cluster was
/// made with one (`init --fixed-time`, for tests), else the system's.
pub fn cluster_clock(dir: Option<&Path>) -> Result<caduceus_engine::ledger::Clock> {
    let fixed = match dir {
        Some(dir) => nodes(dir)?.into_iter().find(|(_, n)| n.role == Role::Coordinator).and_then(|(_, n)| n.fixed_time),
        None => None,
    };
    Ok(match fixed {
        Some(time) => std::sync::Arc::new(move || time),
        None => caduceus_engine::ledger::system_clock(),
    })
}

/// Where a client reaches a cluster: `--target` and `--ca` as given, or else what the cluster
/// directory made by `init` says (the command line and `loadgen` resolve targets alike).
pub fn resolve_target(
    target: Option<SocketAddr>,
    ca: Option<&Path>,
    cluster_dir: Option<&Path>,
) -> Result<(SocketAddr, PathBuf)> {
    let from_dir = cluster_dir.map(client_target).transpose()?;
    let target = target.or(from_dir.as_ref().map(|t| t.0)).context("give --target ADDR or --cluster-dir DIR")?;
    let ca = ca
        .map(Path::to_owned)
        .or(from_dir.map(|t| t.1))
        .context("give --ca FILE (the cluster CA) or --cluster-dir DIR")?;
    Ok((target, ca))
}

/// The role and health of a node, asked over the network.
async fn health(config: &NodeConfig, ca: &Path, identity_from: &NodeConfig) -> Result<(String, String)> {
    let client = match config.role {
        Role::Coordinator => Client::connect(config.listen, ca).await?,
        Role::Shard => {
            let tls = tls::client(tls::roots(ca)?, Some(identity_from.identity()?))?;
            Client::connect_with(config.listen, tls, tls::SHARD_SERVER_NAME).await?
        }
    };
    let answer = client.health().await?;
    client.close().await;
    Ok(answer)
}

fn stop_all(dir: &Path, names: &[String]) {
    let pids: Vec<(String, i32)> =
        names.iter().filter_map(|name| read_pid(dir, name).map(|pid| (name.clone(), pid))).collect();
    for (_, pid) in pids.iter().rev() {
        if alive(*pid) {
            signal(*pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(_, pid)| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid) in &pids {
        if alive(*pid) {
            eprintln!("{name} (pid {pid}) did not stop in 10 s: killing it");
            signal(*pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_file(pid_file(dir, name));
    }
}

/// Starts every node of the cluster in `dir` and waits for Ctrl-C or SIGTERM.
pub async fn up(dir: &Path) -> Result<()> {
    let nodes = nodes(dir)?;
    let names: Vec<String> = nodes.iter().map(|(_, n)| n.name.clone()).collect();
    if let Some(running) = names.iter().find(|name| read_pid(dir, name).is_some_and(alive)) {
        bail!("{running} is already running (run `caduceus cluster down --dir {}`)", dir.display());
    }
    std::fs::create_dir_all(dir.join("run"))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let exe = std::env::current_exe().context("finding the caduceus executable")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (path, config) in &nodes {
        let log = std::fs::File::create(dir.join("logs").join(format!("{}.log", config.name)))?;
        let role = match config.role {
            Role::Coordinator => "coordinator",
            Role::Shard => "shard",
        };
        let child = Command::new(&exe)
            .arg(role)
            .arg("--config")
            .arg(path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", config.name))?;
        std::fs::write(pid_file(dir, &config.name), child.id().to_string())?;
        children.push((config.name.clone(), child));
    }
    let (_, coordinator) = nodes.last().expect("a coordinator");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (name, child) in &mut children {
            if let Some(status) = child.try_wait()? {
                stop_all(dir, &names);
                bail!(
                    "{name} exited during start ({status}); see {}",
                    dir.join("logs").join(format!("{name}.log")).display()
                );
            }
        }
        let last = match health(coordinator, &coordinator.ca, coordinator).await {
            Ok((_, detail)) if detail.starts_with("healthy") => break,
            Ok((_, detail)) => detail,
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            stop_all(dir, &names);
            bail!("the cluster did not become healthy within 60 s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("client address: {}", coordinator.listen);
    for (_, config) in &nodes {
        println!("{} up at {} (pid {})", config.name, config.listen, read_pid(dir, &config.name).unwrap_or(0));
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                // Stopped from outside (`cluster down`): nothing left to wait for.
                let mut exited = 0;
                for (_, child) in &mut children {
                    exited += usize::from(child.try_wait()?.is_some());
                }
                if exited == children.len() {
                    break;
                }
            }
        }
    }
    stop_all(dir, &names);
    for (_, mut child) in children {
        let _ = child.wait();
    }
    println!("cluster stopped");
    Ok(())
}

/// Prints every node's role, pid, address and health.
pub async fn status(dir: &Path) -> Result<bool> {
    let nodes = nodes(dir)?;
    let coordinator = nodes.iter().map(|(_, n)| n).find(|n| n.role == Role::Coordinator).context("no coordinator")?;
    let mut all_healthy = true;
    println!("{:<12} {:<11} {:>8} {:<21} health", "node", "role", "pid", "address");
    for (_, config) in &nodes {
        let pid = read_pid(dir, &config.name).filter(|pid| alive(*pid));
        let health = match pid {
            None => "not running".to_string(),
            Some(_) => {
                match tokio::time::timeout(Duration::from_secs(5), health(config, &config.ca, coordinator)).await {
                    Ok(Ok((_, detail))) => detail,
                    Ok(Err(error)) => format!("not answering: {error:#}"),
                    Err(_) => "not answering within 5 s".into(),
                }
            }
        };
        all_healthy &= pid.is_some() && !health.starts_with("not") && !health.starts_with("degraded");
        println!(
            "{:<12} {:<11} {:>8} {:<21} {health}",
            config.name,
            format!("{:?}", config.role).to_lowercase(),
            pid.map_or("-".into(), |p| p.to_string()),
            config.listen.to_string()
        );
    }
    Ok(all_healthy)
}

/// Stops a cluster started by `up` (in another terminal or in the background).
pub fn down(dir: &Path) -> Result<()> {
    let nodes = nodes(dir)?;
    let names: Vec<String> = nodes.iter().map(|(_, n)| n.name.clone()).collect();
    let running = names.iter().filter(|name| read_pid(dir, name).is_some_and(alive)).count();
    stop_all(dir, &names);
    println!("stopped {running} processes");
    Ok(())
}
