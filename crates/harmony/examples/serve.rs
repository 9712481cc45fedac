//! Harmony over HTTP without the whole `adaptive` binary (which also carries the control plane,
//! so it is much slower to build): the same `Harmony::bind` and `run_until` as `adaptive
//! harmony`, configured from the environment the same way. Used by
//! benches/llama-cpp-baseline.sh.
//!
//! `cargo run -p adaptive-harmony --example serve -- 127.0.0.1:50053 smol=models/x.gguf`

use std::collections::HashMap;

use adaptive_harmony::config::parse_model_list;
use adaptive_harmony::{Harmony, HarmonyConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut config = HarmonyConfig::from_env(&env)?;
    if let Some(bind) = arguments.next() {
        config.bind_addr = bind.parse()?;
    }
    for spec in arguments {
        config.preload_models.extend(parse_model_list(&spec)?);
    }
    let harmony = Harmony::bind(config).await?;
    println!("listening on {}", harmony.base_url());
    harmony
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
