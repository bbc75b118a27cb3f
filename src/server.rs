//! Assembles the process: config, the Pingora server with the client and
//! admin listeners, reload triggers, and an explicit store flush at the end
//! (Pingora's own exit path never runs destructors).

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::admin::AdminApp;
use crate::cluster::{Cluster, ClusterWorker, CooldownSink, OwnSpend};
use crate::health::HealthRegistry;
use crate::metering::writer::LedgerWriter;
use crate::metering::Metering;
use crate::metrics::Metrics;
use crate::relay::Gateway;
use crate::reload::ConfigHandle;

/// Reloads the config on SIGHUP.
struct SighupReload {
    config: Arc<ConfigHandle>,
}

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            error!("cannot listen for SIGHUP; reload with POST /admin/reload");
            return;
        };
        info!("SIGHUP handler installed: kill -HUP reloads the config");
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading config");
                    let config = Arc::clone(&self.config);
                    let _ = tokio::task::spawn_blocking(move || config.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// SIGHUP's default action ends the process. Until the reload service has
/// installed its handler (the listeners already accept by then), a HUP from
/// `systemctl reload` or a deploy script would kill tollgate (exit 129).
/// Ignore it meanwhile: the config is being loaded anyway, and the file
/// watch picks up any later edit. The reload handler replaces this.
fn ignore_sighup_until_handled() {
    // SAFETY: sets a signal disposition to SIG_IGN at start, before any
    // handler of ours exists; no Rust state is touched.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Files and directories tollgate creates (only the store in data_dir) are
/// private to its user: the store keeps the last good config, and that may
/// hold literal secrets. systemd's `UMask=0077` does the same; this covers
/// starts outside systemd.
fn private_files() {
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Fails fast when a listen address is taken. Pingora would retry the bind
/// for 30 s and then panic in its service thread, leaving a process that
/// is up but never answers on that address.
fn ensure_can_listen(field: &str, addr: &str) -> Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!(
            "[server] {field} = \"{addr}\": cannot listen there ({e}); \
             stop the process that holds it (another tollgate?) or choose another address"
        ),
    }
}

/// Applies another node's cooldown report to the channel of that name in
/// the running config (health stays a leaf: this wires it).
fn cooldown_sink(config: Arc<ConfigHandle>) -> CooldownSink {
    Box::new(move |channel, left_ms, failures, reason| {
        let snap = config.load();
        if let Some(ch) = snap.channels.iter().find(|c| *c.name == *channel) {
            ch.health
                .adopt_cooldown(crate::clock::now_ms() + left_ms, failures, reason);
        }
    })
}

/// Runs tollgate until SIGTERM (graceful) or SIGINT (fast).
pub fn run(config_path: &Path) -> Result<()> {
    ignore_sighup_until_handled();
    private_files();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthRegistry::default());
    let config = Arc::new(ConfigHandle::open(
        config_path,
        health,
        Arc::clone(&metrics),
    )?);
    let _watcher = config.watch()?;
    let snap = config.load();
    ensure_can_listen("listen", &snap.server.listen)?;
    ensure_can_listen("admin_listen", &snap.server.admin_listen)?;
    let cluster = match &snap.cluster {
        Some(settings) => Some(Cluster::new(settings.clone(), config.store(), &metrics)?),
        None => None,
    };
    let metering = Arc::new(
        Metering::open(config.store(), Arc::clone(&metrics))?.with_cluster(cluster.clone()),
    );
    if let Some(cluster) = &cluster {
        cluster.set_source(Arc::clone(&metering) as Arc<dyn OwnSpend>);
        cluster.set_cooldown_sink(cooldown_sink(Arc::clone(&config)));
    }
    crate::tokenizer::load_tokenizer();

    let threads = match snap.server.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let conf = ServerConf {
        threads,
        // The grace period is waited out in `drain::SignalWatch`, which
        // ends it early once no request is left; Pingora's would always
        // sleep it whole.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(5),
        // One thread has no one to steal work from: it runs a single-threaded
        // tokio runtime (Pingora's no-steal flavour), ~15% less CPU per
        // request than the work-stealing scheduler. More threads keep work
        // stealing: without it each connection stays on the thread it was
        // given, and an uneven split raised p99 by ~25% at saturation
        // (A/Bs in benches/HISTORY.md).
        work_stealing: threads > 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let registry = Arc::new(crate::keys::registry::Registry::open(config.store())?);
    for w in registry.refresh(&config.load()) {
        tracing::warn!("{w}");
    }
    config.on_reload({
        let registry = Arc::clone(&registry);
        Box::new(move |snap| {
            for w in registry.refresh(snap) {
                tracing::warn!("{w}");
            }
        })
    });
    if let Some(cluster) = &cluster {
        cluster.set_keys(Arc::clone(&registry));
    }
    let keys = Arc::new(crate::keys::KeyService::new(
        registry,
        Arc::clone(&metering),
    ));
    let mut client = Service::new(
        "tollgate client listener".to_string(),
        Gateway::new(
            Arc::clone(&config),
            Arc::clone(&metrics),
            Arc::clone(&metering),
            Arc::clone(&keys),
        ),
    );
    // Plain TCP: Pingora's own header and body buffers already batch the
    // reads. Its default 64 KiB zero-filled read buffer per connection
    // would cost every open stream 64 KiB of RSS for no fewer syscalls.
    client.add_listener(
        ListenerConfig::tcp(snap.server.listen.as_str())
            .l4_buffer(L4BufferSettings::default().read(0)),
    );
    let mut admin = Service::new(
        "tollgate admin listener".to_string(),
        AdminApp {
            config: Arc::clone(&config),
            metrics: Arc::clone(&metrics),
            metering: Arc::clone(&metering),
            keys,
        },
    );
    admin.add_tcp(&snap.server.admin_listen);
    admin.threads = Some(1);
    server.add_service(client);
    server.add_service(admin);
    server.add_service(background_service(
        "sighup reload",
        SighupReload {
            config: Arc::clone(&config),
        },
    ));

    info!(
        listen = %snap.server.listen,
        admin = %snap.server.admin_listen,
        generation = snap.generation,
        "tollgate {} starting",
        env!("CARGO_PKG_VERSION")
    );
    server.add_service(background_service(
        "ledger writer",
        LedgerWriter {
            metering: Arc::clone(&metering),
            settings: {
                let config = Arc::clone(&config);
                Box::new(move || config.load().store.clone())
            },
        },
    ));

    if let Some(cluster) = cluster {
        info!(node = cluster.node(), mode = cluster.mode(), "cluster mode");
        server.add_service(background_service("cluster", ClusterWorker { cluster }));
    }
    drop(snap);
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::drain::SignalWatch {
            config: Arc::clone(&config),
        }),
    });
    config.finish_reloads();
    crate::access_log::flush();
    // Charges of requests that finished after the writer's last batch.
    metering
        .ledger()
        .write_pending(config.load().store.request_log_days);
    config.store().flush()?;
    info!("tollgate stopped; ledger and store flushed");
    Ok(())
}
