//! The service commands: `migrate`, `keys`, `models`, `serve`, `worker`.
//! Configuration comes from flags or the `GRIN_*` environment variables;
//! secrets are read, never printed or logged.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use grin_store::{NewModel, Role, Store, StoreOptions};

/// Connection and secrets shared by the service commands.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Database URL: postgres://… for production, sqlite://FILE?mode=rwc embedded.
    #[arg(
        long,
        global = true,
        env = "GRIN_DATABASE_URL",
        default_value = "sqlite://grin-data/grin.db?mode=rwc"
    )]
    db: String,
    /// Server secret for the HMAC digests of personal data (keep it stable).
    #[arg(long, global = true, env = "GRIN_HMAC_SECRET", hide_env_values = true)]
    hmac_secret: Option<String>,
}

impl ServiceArgs {
    pub async fn open(&self) -> Result<Store> {
        let Some(secret) = &self.hmac_secret else {
            bail!("set GRIN_HMAC_SECRET (or --hmac-secret): the server secret for digests of personal data");
        };
        if secret.len() < 16 {
            bail!("GRIN_HMAC_SECRET must be at least 16 characters");
        }
        if let Some(path) = self.db.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        let store = Store::open(&self.db, StoreOptions::new(secret.as_bytes().to_vec()))
            .await
            .context("opening the database")?;
        Ok(store)
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; the secret is printed once, on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// submitter, reader or admin.
        #[arg(long, default_value = "submitter")]
        role: String,
    },
    List,
    Revoke {
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every record's hash; print the row count and head hash.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register a model: its base checkpoint becomes version 1 and `production`.
    Register {
        #[arg(long)]
        name: String,
        /// Hugging Face model directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Retain corpus (dataset file) used when the model has no corpus rows.
        #[arg(long)]
        retain: Option<PathBuf>,
        #[arg(long)]
        holdout: Option<PathBuf>,
        #[arg(long, default_value = "Question: {question}\nAnswer: ")]
        template: String,
    },
    List,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "GRIN_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Also run a worker in this process.
    #[arg(long)]
    with_worker: bool,
    /// Secret for signing callbacks (HMAC-SHA256); callbacks are off without it.
    #[arg(long, env = "GRIN_CALLBACK_SECRET", hide_env_values = true)]
    callback_secret: Option<String>,
    /// Public base URL (e.g. https://grin.example.com): OpenDSR discovery
    /// names the processor certificate under it.
    #[arg(long, env = "GRIN_PUBLIC_URL")]
    public_url: Option<String>,
    /// OpenDSR processor domain (default: the host of --public-url).
    #[arg(long, env = "GRIN_OPENDSR_DOMAIN")]
    opendsr_domain: Option<String>,
    /// RSA private key (PEM) that signs OpenDSR responses and callbacks;
    /// without it a self-signed development key is generated (with a warning).
    #[arg(long, env = "GRIN_OPENDSR_KEY", requires = "opendsr_cert")]
    opendsr_key: Option<PathBuf>,
    /// The X.509 certificate (PEM) of --opendsr-key, served at discovery.
    #[arg(long, env = "GRIN_OPENDSR_CERT", requires = "opendsr_key")]
    opendsr_cert: Option<PathBuf>,
    /// Models an OpenDSR erasure applies to (comma-separated; default all).
    #[arg(long, env = "GRIN_OPENDSR_MODELS", value_delimiter = ',')]
    opendsr_models: Vec<String>,
    #[command(flatten)]
    worker: WorkerArgs,
}

impl ServeArgs {
    fn opendsr(&self) -> Result<grin_api::OpenDsrSettings> {
        let processor_domain = self
            .opendsr_domain
            .clone()
            .or_else(|| {
                let rest = self.public_url.as_deref()?.split("://").nth(1)?;
                rest.split(['/', ':']).next().map(str::to_owned)
            })
            .unwrap_or_else(|| "localhost".into());
        let mut o = grin_api::OpenDsrSettings {
            public_url: self.public_url.clone(),
            processor_domain,
            ..Default::default()
        };
        if let (Some(k), Some(c)) = (&self.opendsr_key, &self.opendsr_cert) {
            let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
            let key = grin_api::ProcessorKey::from_pem(&read(k)?, &read(c)?)
                .with_context(|| format!("--opendsr-key {} / --opendsr-cert {}", k.display(), c.display()))?;
            o.key = Some(std::sync::Arc::new(key));
        }
        if !self.opendsr_models.is_empty() {
            o.models = Some(self.opendsr_models.clone());
        }
        Ok(o)
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Ed25519 signing key for certificates (PKCS#8 PEM, `grin certificate keygen`).
    #[arg(long, env = "GRIN_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Where published checkpoints go.
    #[arg(long, env = "GRIN_CHECKPOINT_ROOT", default_value = "grin-data/checkpoints")]
    checkpoint_root: PathBuf,
    /// cpu, cuda[:N] or metal.
    #[arg(long, env = "GRIN_DEVICE", default_value = "cpu")]
    device: String,
    /// MiB of model weights kept loaded between jobs (0: no cache).
    #[arg(long, env = "GRIN_MODEL_CACHE_MB", default_value_t = 4096)]
    model_cache_mb: u64,
}

impl WorkerArgs {
    fn config(&self) -> Result<grin_worker::WorkerConfig> {
        let Some(path) = &self.signing_key else {
            bail!("set GRIN_SIGNING_KEY (or --signing-key): the key that signs certificates");
        };
        let key =
            grin::certificate::load_signing_key(path).with_context(|| format!("--signing-key {}", path.display()))?;
        std::fs::create_dir_all(&self.checkpoint_root)
            .with_context(|| format!("creating {}", self.checkpoint_root.display()))?;
        let mut cfg = grin_worker::WorkerConfig::new(
            grin_worker::WorkerConfig::unique_worker_id("grin"),
            self.checkpoint_root.clone(),
            key,
        );
        cfg.device = self
            .device
            .parse()
            .map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))?;
        cfg.model_cache_bytes = self.model_cache_mb << 20;
        cfg.validate()?;
        Ok(cfg)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub fn migrate(args: ServiceArgs) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        store.close().await;
        println!("migrations applied");
        Ok(())
    })
}

pub fn keys(args: ServiceArgs, cmd: KeysCommand) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        match cmd {
            KeysCommand::Create { name, role } => {
                let role: Role = role
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--role {role:?}: expected submitter, reader or admin"))?;
                let (key, secret) = store.create_api_key(&name, role, "cli").await?;
                println!("created key {} ({}, {})", key.id, key.name, key.role.as_str());
                println!("{secret}");
            }
            KeysCommand::List => {
                for k in store.list_api_keys().await? {
                    println!(
                        "{}  {:<10} {}{}",
                        k.id,
                        k.role.as_str(),
                        k.name,
                        if k.revoked_at.is_some() { " (revoked)" } else { "" }
                    );
                }
            }
            KeysCommand::Revoke { id } => {
                store.revoke_api_key(id, "cli").await?;
                println!("revoked {id}");
            }
        }
        store.close().await;
        Ok(())
    })
}

/// A checkpoint directory's manifest as registry file entries.
pub(crate) fn file_entries(checkpoint: &std::path::Path) -> Result<Vec<grin_store::FileEntry>> {
    Ok(grin::checkpoint::manifest(checkpoint)?
        .into_iter()
        .map(|m| grin_store::FileEntry {
            path: m.path,
            sha256: m.sha256,
            bytes: m.bytes as i64,
        })
        .collect())
}

pub fn audit(args: ServiceArgs, cmd: AuditCommand) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        match cmd {
            AuditCommand::Verify => {
                let head = store.verify_audit().await.context("the audit chain does not verify")?;
                println!("audit chain OK: {} records, head {}", head.rows, head.head_hash);
            }
        }
        store.close().await;
        Ok(())
    })
}

pub fn models(args: ServiceArgs, cmd: ModelsCommand) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        match cmd {
            ModelsCommand::Register {
                name,
                checkpoint,
                retain,
                holdout,
                template,
            } => {
                let checkpoint = std::fs::canonicalize(&checkpoint)
                    .with_context(|| format!("--checkpoint {}", checkpoint.display()))?;
                let cfg = grin::config::ModelConfig::load(&checkpoint.join("config.json"))?;
                grin::data::PromptTemplate::new(template.clone())?;
                let abs = |p: Option<PathBuf>| -> Result<Option<String>> {
                    p.map(|p| {
                        let _ = grin::data::load_dataset(&p)?;
                        Ok(std::fs::canonicalize(&p)?.display().to_string())
                    })
                    .transpose()
                };
                let files = file_entries(&checkpoint)?;
                let model = store
                    .create_model(
                        &NewModel {
                            name,
                            base_checkpoint: checkpoint.display().to_string(),
                            architecture: cfg.architecture.hf_class().to_string(),
                            prompt_template: template,
                            retain_corpus: abs(retain)?,
                            holdout_corpus: abs(holdout)?,
                            default_config: serde_json::json!({}),
                            gates: serde_json::Value::Null,
                            base_files: files,
                        },
                        "cli",
                    )
                    .await?;
                println!("registered {} ({})", model.name, model.architecture);
            }
            ModelsCommand::List => {
                for m in store.list_models().await? {
                    println!("{:<20} {:<20} {}", m.name, m.architecture, m.base_checkpoint);
                }
            }
        }
        store.close().await;
        Ok(())
    })
}

pub fn serve(args: ServiceArgs, serve: ServeArgs) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        let mut state = grin_api::AppState::new(store.clone()).with_opendsr(serve.opendsr()?);
        if let Some(secret) = &serve.callback_secret {
            let hub = grin_api::CallbackHub::new(grin_api::CallbackSettings::new(secret.as_bytes().to_vec()));
            grin_api::spawn_callback_dispatcher(store.clone(), hub.clone());
            state = state.with_callbacks(hub);
        }
        let shutdown = grin_worker::shutdown_on_signals();
        let worker = if serve.with_worker {
            let cfg = serve.worker.config()?;
            Some(tokio::spawn(grin_worker::run(store.clone(), cfg, shutdown.clone())))
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(&serve.bind)
            .await
            .with_context(|| format!("binding {}", serve.bind))?;
        let mut stop = shutdown.clone();
        grin_api::serve(listener, state, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
        if let Some(w) = worker {
            w.await??;
        }
        store.close().await;
        Ok(())
    })
}

pub fn worker(args: ServiceArgs, worker: WorkerArgs) -> Result<()> {
    runtime()?.block_on(async {
        let store = args.open().await?;
        let cfg = worker.config()?;
        grin_worker::run(store.clone(), cfg, grin_worker::shutdown_on_signals()).await?;
        store.close().await;
        Ok(())
    })
}
