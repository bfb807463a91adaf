//! `chameleon info`: what a model is, as chameleon sees it.

use clap::Args;

use super::{Global, ModelArgs};

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs, global: &Global) -> anyhow::Result<()> {
    let model = args.model.load(global)?;
    let info = model.info();
    let node = model.mlp_node();
    let fingerprint = model.fingerprint()?.to_string();
    let devices = crate::llm::devices();
    if args.json {
        let v = serde_json::json!({
            "path": model.path(),
            "info": info,
            "fingerprint": fingerprint,
            "mlp_output_node": node.name,
            "lora_exportable": !node.post_norm,
            "devices": devices,
            "gpu_layers": args.model.gpu_layers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("path:          {}", model.path().display());
    println!("architecture:  {}", info.arch);
    if let Some(name) = &info.name {
        println!("name:          {name}");
    }
    println!("description:   {}", info.description);
    println!("layers:        {}", info.n_layer);
    println!("hidden size:   {}", info.n_embd);
    println!("vocabulary:    {}", info.n_vocab);
    println!("train context: {}", info.n_ctx_train);
    println!("parameters:    {}", info.n_params);
    println!("file size:     {} bytes", info.file_size);
    println!("fingerprint:   {fingerprint}");
    println!(
        "mlp output:    `{}-N`{}",
        node.name,
        if node.post_norm {
            " (after the post-MLP norm; runtime edit only)"
        } else {
            " (LoRA export possible)"
        }
    );
    match &info.chat_template {
        Some(t) => {
            let first = t.lines().next().unwrap_or_default();
            println!(
                "chat template: {} lines, starts `{}`",
                t.lines().count(),
                first.chars().take(60).collect::<String>()
            );
        }
        None => println!("chat template: none (ChatML is used)"),
    }
    let names: Vec<String> = devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    println!("devices:       {}", names.join(", "));
    if devices.iter().all(|d| d.cpu) {
        println!(
            "gpu layers:    none (a CPU build; `cargo build --features cuda|metal|vulkan` for a GPU)"
        );
    } else {
        println!(
            "gpu layers:    {} (`--gpu-layers N`, -1 = all)",
            args.model.gpu_layers
        );
    }
    Ok(())
}
