//! `ec2d`: an AWS-compatible EC2 emulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use ec2d::api::Api;
use ec2d::auth::Keyring;
use ec2d::compute::{Compute, EngineChoice};
use ec2d::http::{Server, serve};
use ec2d::storage::Storage;
use ec2d::store::Store;

#[derive(Parser)]
#[command(
    name = "ec2d",
    version,
    about = "An AWS-compatible EC2 emulator whose instances are real machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the EC2 API.
    Serve(ServeArgs),
    /// Build (or check) the built-in AMIs in the data directory's cache.
    Images(ImagesArgs),
}

#[derive(clap::Args)]
struct ImagesArgs {
    #[arg(long, env = "EC2D_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Also build kernel and initrd, for the microvm engine.
    #[arg(long)]
    with_kernel: bool,
    /// Recipes to build (e.g. debian-12); default: those built on first use (tiny).
    recipes: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4566", env = "EC2D_LISTEN")]
    listen: SocketAddr,
    /// Where state (SQLite, disk images) lives.
    #[arg(long, env = "EC2D_DATA_DIR", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Extra access keys, KEY:SECRET:ACCOUNT (12 digits). Repeatable. `test:test:000000000000` is always present.
    #[arg(long = "credentials", value_name = "KEY:SECRET:ACCOUNT")]
    credentials: Vec<String>,
    /// A file of KEY:SECRET:ACCOUNT lines (# comments allowed).
    #[arg(long, value_name = "FILE")]
    credentials_file: Option<PathBuf>,
    /// What runs instances: microvm needs hardware KVM; sandbox needs root (namespaces,
    /// loop devices, cgroups); auto picks microvm only on hardware KVM.
    #[arg(long, value_enum, default_value = "auto", env = "EC2D_ENGINE")]
    engine: EngineChoice,
    /// Seconds a stopping or terminating guest (and every guest when ec2d exits) has to shut
    /// down after the ACPI power button (or its signal) before it is forced off. Raise it for
    /// slow hosts, e.g. a guest under emulation.
    #[arg(long, value_name = "SECONDS", default_value_t = ec2d::compute::DEFAULT_GRACE.as_secs(),
          env = "EC2D_SHUTDOWN_GRACE", value_parser = clap::value_parser!(u64).range(1..=3600))]
    shutdown_grace: u64,
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("ec2d");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/ec2d");
    }
    PathBuf::from("ec2d-data")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EC2D_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Images(args) => {
            let storage = match Storage::new(&args.data_dir) {
                Ok(s) => s.with_boot_files(args.with_kernel),
                Err(e) => {
                    eprintln!("ec2d: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut ok = true;
            let builtins = ec2d::api::images::BUILTINS;
            for b in builtins {
                let wanted = if args.recipes.is_empty() {
                    !b.on_demand
                } else {
                    args.recipes.iter().any(|r| r == b.recipe)
                };
                if !wanted {
                    continue;
                }
                match storage.ensure_builtin(b.recipe) {
                    Ok(img) => println!("{}: {}", b.name, img.root_image.display()),
                    Err(e) => {
                        eprintln!("ec2d: building {} failed: {e}", b.name);
                        ok = false;
                    }
                }
            }
            for r in &args.recipes {
                if !builtins.iter().any(|b| b.recipe == r) {
                    eprintln!("ec2d: no built-in AMI recipe {r}");
                    ok = false;
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Serve(args) => match run_serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("ec2d: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn keyring(args: &ServeArgs) -> Result<Keyring, String> {
    let mut keys = Keyring::with_defaults();
    if let Some(path) = &args.credentials_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            keys.add_spec(line)?;
        }
    }
    for spec in &args.credentials {
        keys.add_spec(spec)?;
    }
    Ok(keys)
}

fn run_serve(args: ServeArgs) -> Result<(), String> {
    let keys = keyring(&args)?;
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            args.data_dir.display()
        )
    })?;
    let store =
        Arc::new(Store::open(&args.data_dir.join("ec2d.sqlite")).map_err(|e| e.to_string())?);
    let mut compute = Compute::new(args.engine, &args.data_dir);
    compute.grace = std::time::Duration::from_secs(args.shutdown_grace);
    let compute = Arc::new(compute);
    // A microVM boots the AMI's own kernel, so built-in AMIs then carry kernel and initrd.
    let storage = Arc::new(
        Storage::new(&args.data_dir)
            .map_err(|e| e.to_string())?
            .with_boot_files(compute.engine_name == "microvm"),
    );
    let api = Api::new(store.clone(), compute.clone(), storage);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    api.dataplane
        .start(store, runtime.handle().clone(), args.listen)
        .map_err(|e| format!("cannot start the network fabric: {e}"))?;
    match ec2d::api::instances::reconcile(&api) {
        Ok(0) => {}
        Ok(n) => tracing::info!(instances = n, "restarting instances that were running"),
        Err(e) => tracing::error!(error = %e, "reconciling instances failed"),
    }
    let server = Arc::new(Server {
        api,
        keys,
        started: Instant::now(),
    });
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(
            listen = %args.listen,
            data_dir = %args.data_dir.display(),
            "ec2d serving the EC2 API"
        );
        serve(server, listener, shutdown_signal()).await;
        tracing::info!("stopping machines");
        tokio::task::spawn_blocking(move || compute.shutdown_all())
            .await
            .map_err(|e| format!("shutting machines down: {e}"))?;
        tracing::info!("ec2d stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
