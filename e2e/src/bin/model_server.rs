//! `switchboard-model-server --listen 127.0.0.1:PORT --script FILE.json [--pid-file F]`:
//! the test model server (`switchboard_e2e::model_server`, the OpenAI Chat Completions
//! wire format at `POST /v1/chat/completions`) as a process, answering from a JSON
//! script (see `rules_from_script`), for `make demo` where no model is reachable.
//! Stops on SIGTERM or Ctrl-C.

use anyhow::{Context, bail};
use switchboard_e2e::model_server::{ModelServer, rules_from_script};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen = None;
    let mut script = None;
    let mut pid_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            "--script" => script = args.next(),
            "--pid-file" => pid_file = args.next(),
            other => bail!(
                "unknown argument {other:?} (usage: --listen IP:PORT --script FILE [--pid-file F])"
            ),
        }
    }
    let listen = listen.context("--listen IP:PORT is required")?;
    let ip: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not IP:PORT"))?;
    if !ip.ip().is_loopback() {
        bail!("--listen {listen}: the test model server listens on loopback only");
    }
    let path = script.context("--script FILE is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let value = serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    let rules = rules_from_script(&value).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let server = ModelServer::start_on(&listen, rules)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if let Some(f) = &pid_file {
        std::fs::write(f, std::process::id().to_string())?;
    }
    println!("model server on {}", server.endpoint());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(server);
    if let Some(f) = &pid_file {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}
