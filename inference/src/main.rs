//! `ferry-inference`: train, evaluate, verify and serve the placement model.
//!
//! Exit codes: 0 success; 1 failure (bad data, a refused artifact, a bind
//! error, ...); 2 a usage error (clap's).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use ferry_inference::artifact;
use ferry_inference::data;
use ferry_inference::evaluation::{self, ModelKind};
use ferry_inference::forest::ForestParams;
use ferry_inference::metrics::THRESHOLD;
use ferry_inference::server::{self, AppState, DEFAULT_MAX_BATCH, ShutdownPolicy};
use ferry_inference::train::{self, FOLDS, Step};

/// Train, evaluate and serve the campus-placement model.
///
/// The model is a bagged forest of linfa decision trees over one-hot encoded
/// features; it is stored as one JSON artifact that carries its schema,
/// metrics, training-data digest and its own sha256.
#[derive(Parser)]
#[command(
    name = "ferry-inference",
    version,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on labelled CSV, cross-validate, and write the model artifact.
    ///
    /// Deterministic: the same data, parameters and seed give a
    /// byte-identical artifact. Progress goes to stderr.
    Train {
        /// Labelled training CSV (a `status` column with `Placed`).
        #[arg(long)]
        data: PathBuf,
        /// Where to write the artifact (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        forest: ForestArgs,
    },
    /// Cross-validate a model kind on labelled CSV and print the metrics
    /// (Markdown), without writing an artifact.
    Evaluate {
        #[arg(long)]
        data: PathBuf,
        /// Which model to evaluate.
        #[arg(long, value_enum, default_value = "forest")]
        kind: ModelKind,
        #[command(flatten)]
        forest: ForestArgs,
    },
    /// Check an artifact (digest, schema, forest, self-check) and print a summary.
    Verify {
        #[arg(long, env = "FERRY_MODEL")]
        model: PathBuf,
    },
    /// Score the candidates of a CSV file (any column order) and print CSV.
    Predict {
        #[arg(long, env = "FERRY_MODEL")]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
    },
    /// Serve the model over HTTP: POST /predict, GET /health, the Open
    /// Inference Protocol v2 under /v2, and GET /metrics.
    ///
    /// The artifact is verified before the port opens; a bad artifact makes
    /// it exit with code 1. On SIGTERM readiness turns false; after
    /// `--shutdown-delay` the server stops accepting, gives in-flight
    /// requests at most `--drain-timeout` to finish, and exits 0.
    Serve {
        #[arg(long, env = "FERRY_MODEL")]
        model: PathBuf,
        #[arg(long, env = "FERRY_ADDR", default_value = "0.0.0.0:9696")]
        addr: SocketAddr,
        /// Most candidates accepted in one request.
        #[arg(long, env = "FERRY_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
        max_batch: usize,
        /// Seconds to keep accepting after SIGTERM while reporting not ready.
        #[arg(long, env = "FERRY_SHUTDOWN_DELAY", default_value_t = 0.0)]
        shutdown_delay: f64,
        /// Seconds in-flight requests get to finish after accepting stops.
        #[arg(long, env = "FERRY_DRAIN_TIMEOUT", default_value_t = 10.0)]
        drain_timeout: f64,
    },
}

#[derive(Args)]
struct ForestArgs {
    /// Seed of the bootstrap samples, column draws and stratified folds.
    #[arg(long, default_value_t = ForestParams::default().seed)]
    seed: u64,
    /// Number of trees.
    #[arg(long, default_value_t = ForestParams::default().trees)]
    trees: usize,
    /// Maximum tree depth (0: unlimited).
    #[arg(long, default_value_t = 16)]
    max_depth: usize,
    /// Columns drawn at random for each split (0: the square root of the
    /// number of encoded columns).
    #[arg(long, default_value_t = 0)]
    features_per_split: usize,
}

impl ForestArgs {
    fn params(&self) -> ForestParams {
        ForestParams {
            trees: self.trees,
            max_depth: (self.max_depth > 0).then_some(self.max_depth),
            features_per_split: (self.features_per_split > 0).then_some(self.features_per_split),
            seed: self.seed,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is not a failure of ours.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { data, out, forest } => {
            let csv = data::read(&data)?;
            let started = Instant::now();
            let artifact = train::train(&csv, &forest.params(), &mut |step| match step {
                Step::Fold { protocol, fold, of } => {
                    eprintln!("[{protocol} cv] fold {fold}/{of} done")
                }
                Step::Final => eprintln!("fitting the final forest on all rows"),
            })?;
            artifact.write(&out)?;
            let m = &artifact.model.metrics;
            eprintln!(
                "wrote {} in {:.1}s: version {}, sha256 {}\n  unshuffled cv accuracy {:.4}, stratified cv accuracy {:.4} (roc auc {:.4})",
                out.display(),
                started.elapsed().as_secs_f64(),
                artifact.model.version,
                artifact.sha256,
                m.cv_unshuffled.mean_accuracy,
                m.cv_stratified.mean_accuracy,
                m.cv_stratified.pooled.roc_auc,
            );
            Ok(())
        }
        Command::Evaluate { data, kind, forest } => {
            let training = data::training_data(&data::read(&data)?)?;
            let params = forest.params();
            let started = Instant::now();
            let mut reports = Vec::new();
            for protocol in evaluation::protocols(&training.labels, FOLDS, params.seed) {
                let name = protocol.name;
                reports.push(evaluation::cross_validate(
                    kind,
                    &params,
                    &training.x,
                    &training.labels,
                    &protocol,
                    &mut |f| eprintln!("[{name} cv] fold {f}/{FOLDS} done"),
                )?);
            }
            let mut out = std::io::stdout().lock();
            write!(out, "{}", evaluation::markdown_table(&reports))?;
            eprintln!(
                "evaluated {kind:?} in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Verify { model } => {
            let artifact = artifact::load(&model)?;
            let m = &artifact.model;
            writeln!(
                std::io::stdout(),
                "ok: {} version {} sha256 {}\n  trained by {} on {} rows (data sha256 {})\n  {} trees, {} features ({} encoded columns)\n  cv accuracy: unshuffled {:.4}, stratified {:.4}",
                m.name,
                m.version,
                artifact.sha256,
                m.trainer,
                m.training_data.rows,
                m.training_data.sha256,
                m.forest.trees.len(),
                m.schema.features.len(),
                m.forest.columns,
                m.metrics.cv_unshuffled.mean_accuracy,
                m.metrics.cv_stratified.mean_accuracy
            )?;
            Ok(())
        }
        Command::Predict { model, data } => {
            let artifact = artifact::load(&model)?;
            let candidates = data::unlabelled(&artifact.model.schema, &data::read(&data)?)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            writeln!(out, "row,probability,placed")?;
            for (i, c) in candidates.iter().enumerate() {
                let p = artifact.model.predict(c);
                writeln!(out, "{},{p},{}", i + 1, p >= THRESHOLD)?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Serve {
            model,
            addr,
            max_batch,
            shutdown_delay,
            drain_timeout,
        } => {
            let policy = ShutdownPolicy {
                delay: seconds("--shutdown-delay", shutdown_delay)?,
                drain: seconds("--drain-timeout", drain_timeout)?,
            };
            let started = Instant::now();
            let artifact = artifact::load(&model)
                .with_context(|| format!("refusing to serve {}", model.display()))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("failed to listen on {addr}; is another process using the port?")
                })?;
                let state = AppState::new(artifact, max_batch);
                state.set_ready(true);
                tracing::info!(
                    %addr,
                    model_version = %state.model.version,
                    sha256 = %state.sha256,
                    ready_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "serving"
                );
                server::serve(listener, state, server::shutdown_signal(), policy).await?;
                tracing::info!("stopped");
                Ok(())
            })
        }
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        anyhow::anyhow!("{flag} must be a non-negative number of seconds, got {value}")
    })
}
