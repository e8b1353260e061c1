//! `odt-appliance serve`: opens the devices (locked), starts the NFS server
//! ([`crate::nfs`]), the control API and the activity log, and runs until SIGTERM or
//! SIGINT, when it makes everything durable and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Settings;
use crate::nfs::{Dispatcher, Export, Server};
use crate::state::{Appliance, StateError};

/// Longest time an acknowledged UNSTABLE write stays in memory only.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often the activity line is logged when something happened.
const ACTIVITY_EVERY: Duration = Duration::from_secs(60);

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the devices failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}")]
    Bind {
        /// Which service (NFS, control).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ready file could not be written.
    #[error("cannot write the ready file {path}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The final flush failed: acknowledged data may not be durable.
    #[error("the final sync failed: acknowledged writes may not be durable")]
    Sync(#[source] odt_store::Error),
    /// The TLS identity in the superblock is unusable.
    #[error(transparent)]
    Tls(#[from] crate::control::TlsError),
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The addresses actually bound (ports chosen by the OS when 0 was asked for).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Bound {
    /// NFS and MOUNT service.
    pub nfs: SocketAddr,
    /// Control API.
    pub control: SocketAddr,
}

/// Runs the appliance until a termination signal.
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    let devices = settings.devices.clone();
    let hooks = settings.test_hooks;
    let mut app = tokio::task::spawn_blocking(move || Appliance::open(&devices, hooks))
        .await
        .expect("opening the devices panicked")?;
    app.set_background_cleaning(settings.background_cleaning);
    let app = Arc::new(app);
    let info = app.info().clone();
    tracing::info!(
        "opened {} device(s) of job {} ({}), set {:016x}: locked until `odt unlock`",
        info.devices,
        info.job_id,
        info.job_name,
        info.set_id
    );

    let export = Export::new(app.clone());
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let nfs_listener = bind("NFS", settings.listen).await?;
    let control_listener = bind("the control API", settings.control).await?;
    let bound = Bound {
        nfs: nfs_listener.local_addr().unwrap_or(settings.listen),
        control: control_listener.local_addr().unwrap_or(settings.control),
    };

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signals)?;
    let server = Server::new(
        settings.allow.clone(),
        settings.limits.clone(),
        Dispatcher::new(export.clone()),
    );
    tokio::spawn(server.run(nfs_listener));
    let acceptor = crate::control::tls_acceptor(&app)?;
    let ctx = Arc::new(crate::control::Ctx::new(app.clone(), bound.nfs));
    tokio::spawn(crate::control::run(
        control_listener,
        acceptor,
        ctx.clone(),
        crate::control::Limits::default(),
    ));
    tokio::spawn(activity(app.clone()));
    tokio::spawn(flusher(app.clone()));

    if settings.allow.allows_everyone() {
        tracing::warn!(
            "no allow-list configured: every NFS client that can reach {} may connect",
            bound.nfs
        );
    }
    tracing::info!(
        "serving NFSv3 and MOUNT on {} (allowed: {}), control API and page on https://{}/ \
         (certificate SHA-256 {}); at most {} NFS requests in flight",
        bound.nfs,
        settings.allow,
        bound.control,
        app.tls().fingerprint(),
        settings.limits.max_inflight
    );
    if let Some(path) = &settings.ready_file {
        let text = serde_json::to_string(&bound).expect("addresses serialise");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| ServeError::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }

    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        _ = sigterm.recv() => tracing::info!("terminated: stopping"),
    }
    // UNSTABLE writes still running may be lost by a stop (clients resend them), but
    // there is no reason to: let them finish first.
    if tokio::time::timeout(Duration::from_secs(30), export.drain())
        .await
        .is_err()
    {
        tracing::warn!("writes still running after 30 s; stopping without them");
    }
    // The custody log: the keys leave memory now (locked), if the store can still take it.
    ctx.note(odt_store::trip::custody::What::Stopped, None)
        .await;
    let a = app.clone();
    tokio::task::spawn_blocking(move || a.sync())
        .await
        .expect("the final sync panicked")
        .map_err(ServeError::Sync)?;
    tracing::info!("all acknowledged data is durable; stopped");
    Ok(())
}

/// Makes UNSTABLE writes durable within [`FLUSH_EVERY`] even if no client commits them
/// (the store also commits whenever its queue fills).
async fn flusher(app: Arc<Appliance>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        let a = app.clone();
        match tokio::task::spawn_blocking(move || a.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                "background flush failed: {}",
                odt_store::error::one_line(&e)
            ),
            Err(e) => tracing::error!("background flush task failed: {e}"),
        }
    }
}

/// Samples the write rate every second and logs what happened every minute (if anything).
async fn activity(app: Arc<Appliance>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = app.meter().totals();
    let mut since = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        app.meter().sample();
        if since.elapsed() < ACTIVITY_EVERY {
            continue;
        }
        let now = app.meter().totals();
        let d = now.since(&last);
        if !d.is_idle() {
            let secs = since.elapsed().as_secs_f64();
            tracing::info!(
                "NFS activity in the last {:.0} s: {} MiB written ({:.1} MiB/s), {} MiB read, \
                 {} created, {} removed, {} errors",
                secs,
                d.written >> 20,
                d.written as f64 / secs / (1 << 20) as f64,
                d.read >> 20,
                d.created,
                d.removed,
                d.errors
            );
        }
        last = now;
        since = tokio::time::Instant::now();
    }
}
