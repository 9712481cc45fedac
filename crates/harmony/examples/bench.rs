//! The engine benchmark without the whole `adaptive` binary (quicker to build in release):
//! `cargo run --release -p adaptive-harmony --example bench -- [model] [skip,list]`, with
//! `HARMONY_DEVICE` and `HARMONY_CPU_MATMUL` read like `adaptive harmony` does.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let mut options = adaptive_harmony::bench::BenchOptions::default();
    if let Some(model) = arguments.next() {
        options.model = model;
    }
    if let Some(skip) = arguments.next() {
        options.skip = skip.split(',').map(str::to_owned).collect();
    }
    if let Ok(value) = std::env::var("HARMONY_DEVICE") {
        options.device = value.parse()?;
    }
    if let Ok(value) = std::env::var("HARMONY_CPU_MATMUL") {
        options.cpu_matmul = value.parse()?;
    }
    let rows = adaptive_harmony::bench::run_bench(options).await?;
    println!("\n| benchmark | result |\n|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
    Ok(())
}
