//! `leofs demo`: a cluster of separate `leofs server` processes on loopback, started with one
//! command: managers, storage nodes (started with `leofs-adm start`'s admin call) and gateways,
//! each with a fresh data dir under one folder and free ports. It prints the S3 endpoints, the
//! keys and the `leofs-adm` command line, and stops everything on Ctrl-C. Every process serves
//! `/metrics` on an admin listener of its own (its log names it).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use leofs_manager::admin::wire::StartRequest;
use leofs_manager::client::AdminClient;

/// Longest wait for one process to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the storage nodes to register.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the processes to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Most processes of each kind (ports and memory are the limit on one machine).
const PROCESSES_MAX: usize = 16;

/// Flags of `leofs demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Storage nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Gateways (S3 endpoints).
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Managers (1, or 3 for a group that survives one lost manager).
    #[arg(long, default_value_t = 1)]
    managers: usize,
    /// Cores of each storage node.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Cores of each gateway.
    #[arg(long, default_value_t = 1)]
    gateway_cores: usize,
    /// Folder for the data dirs and logs; must not exist or be empty [default: a new folder
    /// under the temporary directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// `engine.sync` of the storage nodes: always, batch:<ms> or none-unsafe [default: always].
    #[arg(long, value_name = "POLICY")]
    sync: Option<String>,
    /// Replicas per partition N (at most --nodes): each object is stored on N storage nodes,
    /// writes acknowledged by a majority of them.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// With more than one replica, a storage node that exits (killed, say, to watch the
    /// cluster go on without it) is started again after this many seconds, and takes its
    /// hints; with one replica, or 0 here, the demo stops instead.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    restart_storage_after_secs: u64,
}

/// The running processes; dropping it stops them all.
struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    /// Asks every process to stop (SIGTERM), waits for them, then kills what is left.
    fn stop(&mut self) {
        for (_, child) in &self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill has no memory preconditions; `pid` is our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (name, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        eprintln!("leofs demo: {name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }

    /// The first process that exited, if any.
    fn exited(&mut self) -> Option<String> {
        self.first_exited()
            .map(|(name, status)| format!("{name} exited ({status})"))
    }

    /// The first process that exited, if any: its name and exit status.
    fn first_exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.children
            .iter_mut()
            .find_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some((name.clone(), status)),
                _ => None,
            })
    }

    /// Forgets an exited process (it is started again).
    fn forget(&mut self, name: &str) {
        self.children.retain(|(n, _)| n != name);
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One started process: its stdout lines until it said "leofs ready" come through `lines`.
struct Started {
    lines: mpsc::Receiver<String>,
}

impl Started {
    /// The lines it printed up to "leofs ready".
    fn ready(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "leofs ready" => return Ok(seen),
                Ok(line) => seen.push(line),
                Err(_) => bail!("{name} did not become ready (see its log)"),
            }
        }
    }
}

/// A port `count` consecutive ports from which are free on loopback now.
fn free_ports(count: u16) -> anyhow::Result<u16> {
    // Below the kernel's usual ephemeral range (32768–60999), so that no process's outgoing
    // connection (the nodes call each other all the time) takes a port between the moment it
    // is chosen here and the moment its node binds it.
    const LISTEN_PORTS: std::ops::Range<u16> = 20_000..32_768;
    let span = u64::from(LISTEN_PORTS.end - LISTEN_PORTS.start);
    for _ in 0..1000 {
        let offset = u64::from_str_radix(&leofs_manager::persist::random_hex(8)?, 16)? % span;
        let first = LISTEN_PORTS.start + u16::try_from(offset)?;
        let Some(last) = first.checked_add(count).filter(|&l| l <= LISTEN_PORTS.end) else {
            continue;
        };
        let all_free = (first..last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return Ok(first);
        }
    }
    bail!("cannot find {count} free consecutive ports on 127.0.0.1")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts `leofs server ARGS` as `name`, its stderr (and stdout after "leofs ready") in
/// `<dir>/<name>.log`.
fn spawn(
    processes: &mut Processes,
    dir: &Path,
    name: &str,
    args: &[String],
) -> anyhow::Result<Started> {
    let exe = std::env::current_exe().context("cannot find the leofs binary")?;
    let log_path = dir.join(format!("{name}.log"));
    // A node started again writes on after its first life's log.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // The demo's processes end with it, even when it is killed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("{name} has no stdout"))?;
    processes.children.push((name.to_owned(), child));
    let (tx, lines) = mpsc::channel();
    let mut log = log;
    std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = tx.send(line);
            }
        })?;
    Ok(Started { lines })
}

/// The arguments of a node that joins the managers at `join` with `roles`: its data dir under
/// `dir`, the secret, its cores, and an admin listener of its own for `/metrics`.
fn joined_args(
    name: &str,
    roles: &str,
    join: &str,
    dir: &Path,
    secret: &str,
    cores: usize,
) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        "--roles".into(),
        roles.into(),
        "--join".into(),
        join.into(),
        "--admin-listen".into(),
        loopback(free_ports(1)?).to_string(),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
        "--cluster-secret-file".into(),
        secret.into(),
        "--cores".into(),
        cores.to_string(),
    ])
}

/// The value after `label` in `lines` (`Access key: AKIA…`).
fn value_of(lines: &[String], label: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(label).map(|v| v.trim().to_owned()))
}

/// Runs the demo until SIGINT/SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    for (what, count) in [
        ("--nodes", args.nodes),
        ("--gateways", args.gateways),
        ("--managers", args.managers),
    ] {
        if count == 0 || count > PROCESSES_MAX {
            bail!("{what} must be between 1 and {PROCESSES_MAX}, got {count}");
        }
    }
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("leofs-demo-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty: the demo starts from fresh data dirs (give --dir a new folder)",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let secret_path = dir.join("cluster.secret");
    leofs_manager::persist::write_atomic(
        &secret_path,
        leofs_manager::persist::random_hex(32)?.as_bytes(),
    )?;
    let secret_arg = secret_path.display().to_string();
    // SIGINT/SIGTERM are taken by sigwait below; blocked before any thread or child starts
    // (children unblock their own: `leofs server` waits for them the same way).
    let signals = leofs_shard::block_shutdown_signals()?;
    let mut processes = Processes {
        children: Vec::new(),
    };

    let mut managers = Vec::new();
    let mut credentials = None;
    let mut admin_addr = None;
    for i in 1..=args.managers {
        let name = format!("manager-{i}");
        let rpc = loopback(free_ports(1)?);
        let admin = loopback(free_ports(1)?);
        let mut server_args = vec![
            "--roles".into(),
            "manager".into(),
            "--rpc-listen".into(),
            rpc.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
            "--cluster-secret-file".into(),
            secret_arg.clone(),
            "--cores".into(),
            "1".into(),
        ];
        if let Some(first) = managers.first() {
            server_args.extend(["--join".into(), format!("{first}")]);
        }
        let lines = spawn(&mut processes, &dir, &name, &server_args)?.ready(&name)?;
        if i == 1 {
            credentials = Some((
                value_of(&lines, "Access key:").ok_or_else(|| anyhow!("no access key printed"))?,
                value_of(&lines, "Secret key:").ok_or_else(|| anyhow!("no secret key printed"))?,
            ));
            admin_addr = Some(admin);
        }
        managers.push(rpc);
    }
    let token_path = dir.join("manager-1/manager/admin.token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read {}", token_path.display()))?
        .trim()
        .to_owned();
    let admin = admin_addr.ok_or_else(|| anyhow!("no manager was started"))?;
    let client = AdminClient::new(admin.to_string(), token.clone());
    for rpc in managers.iter().skip(1) {
        client
            .add_manager(&rpc.to_string())
            .with_context(|| format!("cannot add the manager at {rpc}"))?;
    }
    let join = managers
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let cores = u16::try_from(args.cores).context("--cores")?;
    let mut storage = Vec::new();
    let mut storage_args = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("storage-{i}");
        let rpc = loopback(free_ports(cores)?);
        let mut server_args = joined_args(&name, "storage", &join, &dir, &secret_arg, args.cores)?;
        server_args.extend(["--rpc-listen".into(), rpc.to_string()]);
        if let Some(sync) = &args.sync {
            let config = dir.join(format!("{name}.toml"));
            std::fs::write(&config, format!("[engine]\nsync = {sync:?}\n"))?;
            server_args.extend(["--config".into(), config.display().to_string()]);
        }
        storage.push((
            name.clone(),
            spawn(&mut processes, &dir, &name, &server_args)?,
        ));
        storage_args.push((name, server_args));
    }
    wait_attached(&client, args.nodes, &mut processes)?;
    let ring = client
        .start(&StartRequest {
            replicas: Some(args.replicas),
            ..StartRequest::default()
        })
        .context("cannot start the cluster")?;
    for (name, started) in &storage {
        started.ready(name)?;
    }
    let mut endpoints = Vec::new();
    for i in 1..=args.gateways {
        let name = format!("gateway-{i}");
        let listen = loopback(free_ports(1)?);
        let mut server_args = joined_args(
            &name,
            "gateway",
            &join,
            &dir,
            &secret_arg,
            args.gateway_cores,
        )?;
        server_args.extend(["--listen".into(), listen.to_string()]);
        spawn(&mut processes, &dir, &name, &server_args)?.ready(&name)?;
        endpoints.push(format!("http://{listen}"));
    }
    let (access_key, secret_key) = credentials.ok_or_else(|| anyhow!("no credentials"))?;
    let mut out = std::io::stdout().lock();
    let lines = [
        format!(
            "leofs demo: {} manager(s), {} storage node(s) x {} core(s), {} gateway(s); ring epoch {}, {} partitions, {} replica(s) each",
            args.managers,
            args.nodes,
            args.cores,
            args.gateways,
            ring.epoch,
            ring.partitions,
            args.replicas
        ),
        format!("Data and logs: {}", dir.display()),
        format!("S3 endpoints: {}", endpoints.join(" ")),
        format!("Access key: {access_key}"),
        format!("Secret key: {secret_key}"),
        "Region: us-east-1".to_owned(),
        format!("Admin: leofs-adm --admin {admin} --token {token} status"),
        format!(
            "Add a storage node (then leofs-adm … rebalance; the demo does not stop it): leofs server --roles storage --join {join} --rpc-listen {} --admin-listen {} --cluster-secret-file {secret_arg} --cores {} --data-dir {}",
            loopback(free_ports(1)?),
            loopback(free_ports(1)?),
            args.cores,
            dir.join(format!("storage-{}", args.nodes + 1)).display()
        ),
        "leofs demo ready (Ctrl-C stops every process)".to_owned(),
    ];
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    drop(out);
    let restarts = (args.replicas > 1 && args.restart_storage_after_secs > 0).then(|| Restarts {
        after: Duration::from_secs(args.restart_storage_after_secs),
        dir: &dir,
        storage: &storage_args,
    });
    wait_for_stop(&signals, &mut processes, restarts)?;
    eprintln!("leofs demo: stopping");
    processes.stop();
    Ok(())
}

/// Waits until `nodes` storage nodes are attached.
fn wait_attached(
    client: &AdminClient,
    nodes: usize,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        if let Some(exited) = processes.exited() {
            bail!("{exited} (see its log)");
        }
        let attached = client
            .cluster()
            .map(|c| c.nodes.iter().filter(|n| n.member.storage).count())
            .unwrap_or(0);
        if attached >= nodes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("only {attached} of {nodes} storage nodes registered within {ATTACH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a replicated demo brings back a storage node that exited.
struct Restarts<'a> {
    /// How long after it exited.
    after: Duration,
    /// The demo's folder (data dirs and logs).
    dir: &'a Path,
    /// Each storage node's name and `leofs server` arguments.
    storage: &'a [(String, Vec<String>)],
}

/// Returns on SIGINT/SIGTERM, or when a process of the demo exits on its own, except a
/// storage node of a replicated cluster: the others go on without it, and it is started
/// again after `restarts.after`.
fn wait_for_stop(
    signals: &libc::sigset_t,
    processes: &mut Processes,
    restarts: Option<Restarts<'_>>,
) -> anyhow::Result<()> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let mut pending: Vec<(String, Instant)> = Vec::new();
    loop {
        // SAFETY: `signals` is an initialised set; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(signals, std::ptr::null_mut(), &timeout) };
        if signal == libc::SIGINT || signal == libc::SIGTERM {
            return Ok(());
        }
        if let Some((name, status)) = processes.first_exited() {
            let restart = restarts.as_ref().filter(|_| name.starts_with("storage-"));
            let Some(restart) = restart else {
                eprintln!("leofs demo: {name} exited ({status}); stopping the others");
                return Ok(());
            };
            eprintln!(
                "leofs demo: {name} exited ({status}); the cluster goes on without it, and it \
                 starts again in {} s",
                restart.after.as_secs()
            );
            processes.forget(&name);
            pending.push((name, Instant::now() + restart.after));
        }
        if let Some(restart) = &restarts {
            let now = Instant::now();
            for (name, _) in pending.iter().filter(|(_, at)| *at <= now) {
                let args = restart
                    .storage
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, args)| args)
                    .ok_or_else(|| anyhow!("no arguments kept for {name}"))?;
                spawn(processes, restart.dir, name, args)?;
                eprintln!("leofs demo: {name} started again");
            }
            pending.retain(|(_, at)| *at > now);
        }
    }
}
