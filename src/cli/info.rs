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
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!("path:          {}", model.path().display())?;
    outln!("architecture:  {}", info.arch)?;
    if let Some(name) = &info.name {
        outln!("name:          {name}")?;
    }
    outln!("description:   {}", info.description)?;
    outln!("layers:        {}", info.n_layer)?;
    outln!("hidden size:   {}", info.n_embd)?;
    outln!("vocabulary:    {}", info.n_vocab)?;
    outln!("train context: {}", info.n_ctx_train)?;
    outln!("parameters:    {}", info.n_params)?;
    outln!("file size:     {} bytes", info.file_size)?;
    outln!("fingerprint:   {fingerprint}")?;
    outln!(
        "mlp output:    `{}-N`{}",
        node.name,
        if node.post_norm {
            " (after the post-MLP norm; runtime edit only)"
        } else {
            " (LoRA export possible)"
        }
    )?;
    match &info.chat_template {
        Some(t) => {
            let first = t.lines().next().unwrap_or_default();
            outln!(
                "chat template: {} lines, starts `{}`",
                t.lines().count(),
                first.chars().take(60).collect::<String>()
            )?;
        }
        None => outln!("chat template: none (ChatML is used)")?,
    }
    let names: Vec<String> = devices
        .iter()
        .map(|d| format!("{} ({})", d.name, d.description))
        .collect();
    outln!("devices:       {}", names.join(", "))?;
    if devices.iter().all(|d| d.cpu) {
        outln!(
            "gpu layers:    none (a CPU build; `cargo build --features cuda|metal|vulkan` for a GPU)"
        )?;
    } else {
        outln!(
            "gpu layers:    {} (`--gpu-layers N`, -1 = all)",
            args.model.gpu_layers
        )?;
    }
    Ok(())
}
