use std::path::PathBuf;

/// Errors of the engine. Each says what went wrong; [`LlmError::hint`] says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("model file `{}` not found", path.display())]
    ModelNotFound { path: PathBuf },
    /// Not a regular file, or it cannot be opened.
    #[error(transparent)]
    File(crate::files::FileError),
    #[error("could not read `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a GGUF model (it does not start with the `GGUF` magic)", path.display())]
    NotGguf { path: PathBuf },
    #[error("`{}` is not a valid GGUF file (llama.cpp could not parse its header)", path.display())]
    InvalidGguf { path: PathBuf },
    #[error(
        "`{}` is truncated: its tensors need {expected} bytes, the file has {actual}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("llama.cpp could not load `{}`", path.display())]
    LoadFailed { path: PathBuf },
    #[error("llama.cpp could not create a context of {n_ctx} tokens")]
    ContextFailed { n_ctx: u32 },
    #[error("{needed} tokens do not fit in the context of {n_ctx} tokens")]
    ContextFull { needed: usize, n_ctx: u32 },
    #[error("llama_decode failed with status {0}")]
    Decode(i32),
    #[error("could not tokenize the text")]
    Tokenize,
    #[error("the model's chat template could not be applied")]
    ChatTemplate,
    #[error(
        "edit plan is for {plan_layers} layers of size {plan_hidden}, the model has {n_layer} of size {hidden}"
    )]
    PlanMismatch {
        plan_layers: usize,
        plan_hidden: usize,
        n_layer: usize,
        hidden: usize,
    },
    #[error("layer {layer} is out of range: the model has {n_layer} layers")]
    LayerOutOfRange { layer: usize, n_layer: usize },
    #[error(
        "the MLP output of layer {layer} was not found in the `{arch}` graph (looked for `{node}-{layer}`)"
    )]
    NodeNotFound {
        arch: String,
        node: &'static str,
        layer: usize,
    },
    #[error("the MLP output of layer {layer} is {what}, which the edit hook cannot handle")]
    UnsupportedTensor { layer: usize, what: String },
    #[error("the eval callback failed: {0}")]
    Callback(String),
}

impl LlmError {
    /// A `hint:` line for errors the user can fix.
    pub fn hint(&self) -> Option<String> {
        match self {
            LlmError::ModelNotFound { .. } => Some(
                "fetch the default model with `models/fetch.sh`, or pass your own with `--model PATH`"
                    .into(),
            ),
            LlmError::NotGguf { .. } | LlmError::InvalidGguf { .. } => {
                Some("`--model` takes a GGUF file as llama.cpp writes them (`*.gguf`)".into())
            }
            LlmError::Truncated { .. } => Some(
                "the download was probably cut short; fetch the file again (`models/fetch.sh` verifies checksums)"
                    .into(),
            ),
            LlmError::File(e) => e.hint(),
            LlmError::ContextFull { .. } => Some("raise `--ctx` or shorten the input".into()),
            LlmError::NodeNotFound { .. } => Some(
                "this architecture names its MLP output differently; run with `--verbose` and report it"
                    .into(),
            ),
            _ => None,
        }
    }
}
