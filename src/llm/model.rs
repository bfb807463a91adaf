//! A loaded GGUF model: metadata, fingerprint, tokenizer, chat template.

use std::ffi::{CStr, CString, c_char};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::OnceLock;

use llama_cpp_sys_2 as sys;
use sha2::{Digest, Sha256};

use super::backend;
use super::context::{Context, ContextParams};
use super::error::LlmError;
use super::hook::{MlpNode, mlp_node};

/// A token id of the model's vocabulary.
pub type Token = i32;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Layers to offload to the GPU (CUDA/Metal/Vulkan builds); -1 offloads all, 0 none. CPU builds
    /// ignore it.
    pub gpu_layers: i32,
}

impl Default for ModelParams {
    /// Every layer on the GPU when the build has one, as llama.cpp does.
    fn default() -> Self {
        ModelParams { gpu_layers: -1 }
    }
}

/// What `chameleon info` shows about a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// `general.architecture` (`llama`, `qwen2`, `gemma3`, ...).
    pub arch: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// llama.cpp's one-line description (architecture, size, quantization).
    pub description: String,
    /// Number of decoder layers.
    pub n_layer: usize,
    /// Hidden size (the width of every MLP output).
    pub n_embd: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Parameter count.
    pub n_params: u64,
    /// File size in bytes.
    pub file_size: u64,
    /// The chat template stored in the file (Jinja source), if any.
    pub chat_template: Option<String>,
}

/// One message of a chat, for [`Model::apply_chat_template`].
#[derive(Debug, Clone)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// A model loaded by llama.cpp. Create contexts with [`Model::new_context`].
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    path: PathBuf,
    info: ModelInfo,
    fingerprint: OnceLock<String>,
    /// LoRA adapters loaded into the model; llama.cpp frees them with the model.
    loras: Vec<NonNull<sys::llama_adapter_lora>>,
    /// The layers asked to run on a GPU (`ModelParams::gpu_layers`).
    gpu_layers: i32,
}

/// A LoRA adapter loaded with [`Model::load_lora`], to activate with [`Context::set_lora`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraId(pub(crate) usize);

// SAFETY: llama.cpp allows one model to be shared by contexts on several threads; every method here
// reads the model through llama.cpp's const accessors (`llama_model_*`, `llama_vocab_*`, `llama_tokenize`),
// which do not mutate it, and the pointer is freed only in `Drop` (exclusive access).
unsafe impl Send for Model {}
// SAFETY: see `Send`: shared access only reaches const C functions.
unsafe impl Sync for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `llama_model_load_from_file` and is freed exactly once; contexts borrow
        // the model (`Context<'m>`), so none outlives it.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish()
    }
}

impl Model {
    /// Load a GGUF model. The file is checked before llama.cpp sees it, so that a missing, truncated or
    /// foreign file gives an error that names the problem instead of a crash.
    ///
    /// # Errors
    /// [`LlmError::ModelNotFound`], [`LlmError::NotGguf`], [`LlmError::InvalidGguf`],
    /// [`LlmError::Truncated`], or [`LlmError::LoadFailed`] when llama.cpp refuses the file.
    pub fn load(path: &Path, params: &ModelParams) -> Result<Model, LlmError> {
        backend::init();
        let file_size = check_gguf(path)?;
        let c_path = path_to_cstring(path)?;
        // SAFETY: `llama_model_default_params` returns a plain struct by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = params.gpu_layers;
        // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call; `mp` is a valid params
        // struct (defaults plus a layer count). A null return is handled below.
        let raw = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
        let ptr = NonNull::new(raw).ok_or_else(|| LlmError::LoadFailed {
            path: path.to_path_buf(),
        })?;
        // SAFETY: `ptr` is a live model; the vocab it returns lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let Some(vocab) = NonNull::new(vocab.cast_mut()) else {
            // SAFETY: `ptr` is live and owned here; freed once since we return without building `Model`.
            unsafe { sys::llama_model_free(ptr.as_ptr()) };
            return Err(LlmError::LoadFailed {
                path: path.to_path_buf(),
            });
        };
        let mut model = Model {
            ptr,
            vocab,
            path: path.to_path_buf(),
            info: ModelInfo {
                arch: String::new(),
                name: None,
                description: String::new(),
                n_layer: 0,
                n_embd: 0,
                n_vocab: 0,
                n_ctx_train: 0,
                n_params: 0,
                file_size,
                chat_template: None,
            },
            fingerprint: OnceLock::new(),
            loras: Vec::new(),
            gpu_layers: params.gpu_layers,
        };
        model.info = model.read_info(file_size);
        Ok(model)
    }

    fn read_info(&self, file_size: u64) -> ModelInfo {
        let m = self.ptr.as_ptr();
        let mut desc = vec![0u8; 256];
        // SAFETY: `m` is live; the buffer is writable for its full length, which we pass.
        let n = unsafe { sys::llama_model_desc(m, desc.as_mut_ptr().cast(), desc.len()) };
        desc.truncate(n.clamp(0, 255) as usize);
        // SAFETY: `m` is live; a null name asks for the default template; the returned string (or null)
        // is owned by the model and copied before the model can go away.
        let tmpl = unsafe { sys::llama_model_chat_template(m, std::ptr::null()) };
        let chat_template = (!tmpl.is_null())
            // SAFETY: non-null, NUL-terminated, owned by the live model.
            .then(|| {
                unsafe { CStr::from_ptr(tmpl) }
                    .to_string_lossy()
                    .into_owned()
            });
        // SAFETY (all four): plain getters on a live model / vocab.
        let (n_layer, n_embd, n_ctx_train, n_params) = unsafe {
            (
                sys::llama_model_n_layer(m),
                sys::llama_model_n_embd(m),
                sys::llama_model_n_ctx_train(m),
                sys::llama_model_n_params(m),
            )
        };
        // SAFETY: plain getter on the live vocab.
        let n_vocab = unsafe { sys::llama_vocab_n_tokens(self.vocab.as_ptr()) };
        ModelInfo {
            arch: self.meta("general.architecture").unwrap_or_default(),
            name: self.meta("general.name"),
            description: String::from_utf8_lossy(&desc).into_owned(),
            n_layer: n_layer.max(0) as usize,
            n_embd: n_embd.max(0) as usize,
            n_vocab: n_vocab.max(0) as usize,
            n_ctx_train: n_ctx_train.max(0) as u32,
            n_params,
            file_size,
            chat_template,
        }
    }

    /// A metadata value of the GGUF file as a string.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 1024];
        loop {
            // SAFETY: live model, NUL-terminated key, writable buffer of the length passed.
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.ptr.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
    }

    /// Architecture, sizes and template.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Path the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of decoder layers.
    pub fn n_layer(&self) -> usize {
        self.info.n_layer
    }

    /// Hidden size.
    pub fn n_embd(&self) -> usize {
        self.info.n_embd
    }

    /// Whether some of this model's layers run on a GPU: a GPU build asked for any (`gpu_layers` not 0).
    pub fn on_gpu(&self) -> bool {
        self.gpu_layers != 0 && backend::gpu_offload()
    }

    /// The GPUs this model's layers run on, and how many layers were asked for (`-1`: all), as
    /// `CUDA0 (NVIDIA H200), layers -1`; `None` when everything runs on the CPU ([`Model::on_gpu`]).
    /// Backends round differently, so greedy answers can differ between them.
    pub fn gpu_backend(&self) -> Option<String> {
        if !self.on_gpu() {
            return None;
        }
        let gpus: Vec<String> = backend::devices()
            .into_iter()
            .filter(|d| !d.cpu)
            .map(|d| format!("{} ({})", d.name, d.description))
            .collect();
        (!gpus.is_empty()).then(|| format!("{}, layers {}", gpus.join(", "), self.gpu_layers))
    }

    /// Where this architecture's MLP output sits in the graph, if chameleon knows it.
    pub fn mlp_node(&self) -> MlpNode {
        mlp_node(&self.info.arch)
    }

    /// The model's fingerprint: the SHA-256 of the file, hex. Stored profiles are bound to it, so
    /// vectors fitted on one file are never applied to another. Computed on first use (about 0.1 s per
    /// 100 MB) and remembered.
    ///
    /// # Errors
    /// When the file can no longer be read.
    pub fn fingerprint(&self) -> Result<&str, LlmError> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let io = |source| LlmError::Io {
            path: self.path.clone(),
            source,
        };
        let (mut file, _) =
            crate::files::open_regular(&self.path).map_err(|e| model_file_error(&self.path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let hex = crate::digest::hex(&hasher.finalize());
        Ok(self.fingerprint.get_or_init(|| hex))
    }

    /// Tokenize `text`. `add_special` adds the BOS token where the model wants one; `parse_special`
    /// turns special-token text such as `<|im_start|>` into the special tokens (needed for chat prompts).
    ///
    /// # Errors
    /// [`LlmError::Tokenize`] when llama.cpp refuses the text.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>, LlmError> {
        let len = i32::try_from(text.len()).map_err(|_| LlmError::Tokenize)?;
        let mut out: Vec<Token> = vec![0; text.len() + 8];
        for _ in 0..2 {
            // SAFETY: live vocab; `text` is valid for `len` bytes (no NUL needed: the length is passed);
            // `out` is writable for the capacity we pass.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr().cast::<c_char>(),
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out);
            }
            // a negative count is the number of tokens needed
            out.resize(n.unsigned_abs() as usize, 0);
        }
        Err(LlmError::Tokenize)
    }

    /// The bytes a token stands for (special tokens rendered as their text).
    pub fn token_bytes(&self, token: Token) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: live vocab; `buf` writable for the length passed.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// Text of a token sequence (lossy for incomplete UTF-8).
    pub fn detokenize(&self, tokens: &[Token]) -> String {
        let bytes: Vec<u8> = tokens.iter().flat_map(|&t| self.token_bytes(t)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: plain getter on the live vocab; -1 (LLAMA_TOKEN_NULL) means none.
        let t = unsafe { sys::llama_vocab_bos(self.vocab.as_ptr()) };
        (t >= 0).then_some(t)
    }

    /// True for end-of-generation tokens (EOS, EOT, `<|im_end|>` ...).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: plain getter on the live vocab.
        unsafe { sys::llama_vocab_is_eog(self.vocab.as_ptr(), token) }
    }

    /// Render `messages` with the model's own chat template; with `add_assistant` the text ends with
    /// the opening of the assistant's turn. Models without a template (or with one llama.cpp does not
    /// recognise) fall back to ChatML, which most small instruct models understand.
    ///
    /// # Errors
    /// [`LlmError::ChatTemplate`] when a message contains a NUL byte.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_assistant: bool,
    ) -> Result<String, LlmError> {
        let roles: Vec<CString> = messages
            .iter()
            .map(|m| CString::new(m.role.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| LlmError::ChatTemplate)?;
        let contents: Vec<CString> = messages
            .iter()
            .map(|m| CString::new(m.content.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| LlmError::ChatTemplate)?;
        let chat: Vec<sys::llama_chat_message> = roles
            .iter()
            .zip(&contents)
            .map(|(r, c)| sys::llama_chat_message {
                role: r.as_ptr(),
                content: c.as_ptr(),
            })
            .collect();
        let tmpl = match &self.info.chat_template {
            Some(t) => CString::new(t.as_str()).map_err(|_| LlmError::ChatTemplate)?,
            None => CString::new("chatml").expect("no NUL"),
        };
        let total: usize = messages.iter().map(|m| m.content.len() + 64).sum::<usize>() + 256;
        let mut buf = vec![0u8; total * 2];
        for _ in 0..2 {
            // SAFETY: `tmpl`, the role and content strings live until after the call; `chat` holds
            // `chat.len()` valid messages; `buf` is writable for the length passed.
            let n = unsafe {
                sys::llama_chat_apply_template(
                    tmpl.as_ptr(),
                    chat.as_ptr(),
                    chat.len(),
                    add_assistant,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                )
            };
            if n < 0 {
                if self.info.chat_template.is_some() {
                    // an unrecognised template: fall back to ChatML
                    return chatml(messages, add_assistant);
                }
                return Err(LlmError::ChatTemplate);
            }
            let n = n as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return String::from_utf8(buf).map_err(|_| LlmError::ChatTemplate);
            }
            buf.resize(n, 0);
        }
        Err(LlmError::ChatTemplate)
    }

    /// The prompt for one user message (optionally after a system message), in the model's template.
    ///
    /// # Errors
    /// See [`Model::apply_chat_template`].
    pub fn chat_prompt(&self, system: Option<&str>, user: &str) -> Result<String, LlmError> {
        let mut msgs = Vec::with_capacity(2);
        if let Some(s) = system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", user));
        self.apply_chat_template(&msgs, true)
    }

    /// A new inference context on this model.
    ///
    /// # Errors
    /// [`LlmError::ContextFailed`] when llama.cpp cannot allocate it.
    pub fn new_context(&self, params: &ContextParams) -> Result<Context<'_>, LlmError> {
        Context::new(self, params)
    }

    /// Load a LoRA adapter GGUF (such as `chameleon profile export --lora` writes) into the model. Takes
    /// `&mut self` because llama.cpp registers the adapter in the model: load adapters before creating
    /// contexts.
    ///
    /// # Errors
    /// [`LlmError::LoadFailed`] when llama.cpp refuses the file (wrong architecture or shapes).
    pub fn load_lora(&mut self, path: &Path) -> Result<LoraId, LlmError> {
        model_file(path)?;
        let c = path_to_cstring(path)?;
        // SAFETY: live model, exclusively borrowed; valid path. Null on failure.
        let a = unsafe { sys::llama_adapter_lora_init(self.ptr.as_ptr(), c.as_ptr()) };
        let a = NonNull::new(a).ok_or_else(|| LlmError::LoadFailed {
            path: path.to_path_buf(),
        })?;
        self.loras.push(a);
        Ok(LoraId(self.loras.len() - 1))
    }

    pub(crate) fn lora(&self, id: LoraId) -> Option<*mut sys::llama_adapter_lora> {
        self.loras.get(id.0).map(|p| p.as_ptr())
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }
}

fn chatml(messages: &[ChatMessage], add_assistant: bool) -> Result<String, LlmError> {
    let mut s = String::new();
    for m in messages {
        s.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    if add_assistant {
        s.push_str("<|im_start|>assistant\n");
    }
    Ok(s)
}

fn path_to_cstring(path: &Path) -> Result<CString, LlmError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| LlmError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// The size of the regular file at `path` (a model or an adapter): a FIFO, a device or a directory is
/// refused before llama.cpp opens it (an open FIFO would block forever).
fn model_file(path: &Path) -> Result<u64, LlmError> {
    crate::files::check_regular(path).map_err(|e| model_file_error(path, e))
}

fn model_file_error(path: &Path, e: crate::files::FileError) -> LlmError {
    match e {
        crate::files::FileError::NotFound { .. } => LlmError::ModelNotFound {
            path: path.to_path_buf(),
        },
        other => LlmError::File(other),
    }
}

/// Check that `path` is a complete GGUF file before llama.cpp loads it; returns the file size.
fn check_gguf(path: &Path) -> Result<u64, LlmError> {
    // a FIFO, a device or a directory is refused before anything opens it for reading
    let (mut f, actual) =
        crate::files::open_regular(path).map_err(|e| model_file_error(path, e))?;
    let mut magic = [0u8; 4];
    if actual < 4 || f.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
        return Err(LlmError::NotGguf {
            path: path.to_path_buf(),
        });
    }
    let c_path = path_to_cstring(path)?;
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: valid NUL-terminated path; with `no_alloc` and a null `ctx` out-pointer llama.cpp only parses
    // the header and tensor infos. A null return means it could not parse them.
    let g = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
    if g.is_null() {
        return Err(LlmError::InvalidGguf {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: `g` is a live gguf context until `gguf_free` below; indices are in 0..n_tensors.
    let expected = unsafe {
        let base = sys::gguf_get_data_offset(g) as u64;
        let n = sys::gguf_get_n_tensors(g);
        let mut end = base;
        for i in 0..n {
            let off = sys::gguf_get_tensor_offset(g, i) as u64;
            let size = sys::gguf_get_tensor_size(g, i) as u64;
            end = end.max(base + off + size);
        }
        sys::gguf_free(g);
        end
    };
    if expected > actual {
        return Err(LlmError::Truncated {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(actual)
}
