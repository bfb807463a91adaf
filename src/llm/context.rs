//! An inference context: KV cache, batches, generation, capture and the edit hook.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::error::LlmError;
use super::hook::{HookState, eval_callback};
use super::model::{Model, Token};
use crate::steer::EditPlan;

/// How to create a [`Context`].
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Context size in tokens.
    pub n_ctx: u32,
    /// Tokens per `llama_decode` call (and per physical batch).
    pub n_batch: u32,
    /// CPU threads; `None` uses every core.
    pub n_threads: Option<usize>,
    /// Register the eval callback. Off only for the plain-llama.cpp baseline in benchmarks: a context
    /// without it cannot edit or capture.
    pub hook: bool,
    /// Compute mean-pooled embeddings ([`Context::embed`]) instead of logits.
    pub embeddings: bool,
    /// Sequences decoded together ([`Context::decode_rows`]); 1 for everything else. Above 1 the KV
    /// cache is one unified stream, so a batch's rows reach the eval callback in the batch's order.
    pub n_seq: u32,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: None,
            hook: true,
            embeddings: false,
            n_seq: 1,
        }
    }
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 is greedy decoding; above 0 samples (top-k 40, top-p, temperature) with `seed`.
    pub temperature: f32,
    /// Nucleus sampling threshold when sampling.
    pub top_p: f32,
    /// Seed of the sampler, for reproducible sampling.
    pub seed: u32,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Added to these tokens' logits before sampling (a profile's `words` way).
    pub logit_bias: Vec<(Token, f32)>,
    /// Each `logit_bias` entry holds only until its token is generated: a bias on whether a token
    /// appears in the reply, not on how often (the `words` way's statistic counts presence).
    pub bias_until_used: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 0.95,
            seed: 0,
            stop: Vec::new(),
            logit_bias: Vec::new(),
            bias_until_used: false,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` was reached.
    MaxTokens,
    /// A stop string appeared.
    StopString,
}

/// The result of [`Context::generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (without the prompt, cut before any stop string).
    pub text: String,
    /// The generated tokens, the end-of-generation token excluded.
    pub tokens: Vec<Token>,
    /// Prompt tokens processed for this generation.
    pub n_prompt: usize,
    /// Why it ended.
    pub stop: StopReason,
}

/// One token of a batch of several sequences ([`Context::decode_rows`]).
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub token: Token,
    /// Its position in its sequence.
    pub pos: usize,
    /// The sequence (0 to `n_seq - 1`).
    pub seq: i32,
    /// Whether to compute its logits.
    pub output: bool,
    /// The edit plan of its sequence.
    pub plan: Arc<EditPlan>,
}

/// What to capture: the MLP outputs of these layers.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    /// Decoder layers to capture, each at most once.
    pub layers: Vec<usize>,
}

/// MLP outputs captured for every token position of a text: for each requested layer a
/// `n_pos x hidden` row-major matrix.
#[derive(Debug, Clone)]
pub struct Capture {
    hidden: usize,
    n_pos: usize,
    layers: Vec<usize>,
    data: Vec<Vec<f32>>,
}

impl Capture {
    /// Hidden size (values per row).
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Token positions captured.
    pub fn n_pos(&self) -> usize {
        self.n_pos
    }

    /// The captured layers, in request order.
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    /// All rows of `layer` (`n_pos x hidden`), or `None` if it was not captured.
    pub fn rows(&self, layer: usize) -> Option<&[f32]> {
        let i = self.layers.iter().position(|&l| l == layer)?;
        Some(&self.data[i])
    }

    /// The MLP output of `layer` at token position `pos`.
    pub fn row(&self, layer: usize, pos: usize) -> Option<&[f32]> {
        let rows = self.rows(layer)?;
        rows.get(pos * self.hidden..(pos + 1) * self.hidden)
    }

    /// Mean over the positions `range` of `layer` (the pooling of method.md stage 4).
    pub fn mean(&self, layer: usize, range: std::ops::Range<usize>) -> Option<Vec<f32>> {
        if range.is_empty() || range.end > self.n_pos {
            return None;
        }
        let rows = self.rows(layer)?;
        let mut out = vec![0f64; self.hidden];
        for pos in range.clone() {
            for (o, &x) in out
                .iter_mut()
                .zip(&rows[pos * self.hidden..(pos + 1) * self.hidden])
            {
                *o += f64::from(x);
            }
        }
        let n = range.len() as f64;
        Some(out.into_iter().map(|s| (s / n) as f32).collect())
    }

    /// The MLP output of `layer` at the last position.
    pub fn last(&self, layer: usize) -> Option<Vec<f32>> {
        self.row(layer, self.n_pos.checked_sub(1)?)
            .map(<[f32]>::to_vec)
    }
}

/// An inference context on a [`Model`]: owns the KV cache, a batch, and the edit hook.
///
/// Plans are swapped with [`Context::set_plan`] without reloading anything; the KV cache is keyed by
/// the plan's id, so a state computed under one plan is never continued under another.
pub struct Context<'m> {
    ptr: NonNull<sys::llama_context>,
    model: &'m Model,
    /// The callback's state; a raw pointer (from `Box::into_raw`) because llama.cpp holds it too.
    hook: Option<NonNull<HookState>>,
    /// Worker threads kept across graph computations. Without one, ggml spawns threads for every
    /// computation, and every node the eval callback asks for splits the graph into one more
    /// computation: with all layers edited that was 31 thread spawns per token (-8% decode speed).
    /// The workers poll briefly between computations (cheap graph splits) and the pool is paused
    /// between decodes, so an idle context never spins.
    threadpool: Option<NonNull<sys::ggml_threadpool>>,
    batch: sys::llama_batch,
    n_batch: usize,
    n_ctx: u32,
    /// Id of the plan the KV cache content was computed under.
    kv_plan: u64,
    /// Positions currently in the KV cache (sequence 0).
    n_past: usize,
    plan_id: u64,
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: each handle was created in `Context::new` and is freed once, the context first, so the
        // callback can no longer run when its state is dropped.
        unsafe {
            sys::llama_free(self.ptr.as_ptr());
            if let Some(tp) = self.threadpool {
                sys::ggml_threadpool_free(tp.as_ptr());
            }
            sys::llama_batch_free(self.batch);
            if let Some(h) = self.hook {
                drop(Box::from_raw(h.as_ptr()));
            }
        }
    }
}

impl<'m> Context<'m> {
    pub(crate) fn new(model: &'m Model, params: &ContextParams) -> Result<Context<'m>, LlmError> {
        let n_threads = params
            .n_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
            .max(1) as i32;
        let n_batch = params.n_batch.clamp(1, params.n_ctx.max(1));
        let hook = params.hook.then(|| {
            let state = HookState::new(model.mlp_node(), model.n_layer(), model.n_embd());
            // SAFETY: `Box::into_raw` never returns null.
            unsafe { NonNull::new_unchecked(Box::into_raw(Box::new(state))) }
        });
        // SAFETY: returns a plain struct by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = n_batch;
        cp.n_ubatch = n_batch;
        cp.n_seq_max = params.n_seq.max(1);
        // one stream keeps the batch's order in every ubatch (`split_simple`), which the per-row edit
        // of several sequences relies on
        cp.kv_unified = params.n_seq > 1;
        cp.n_threads = n_threads;
        cp.n_threads_batch = n_threads;
        cp.no_perf = true;
        cp.swa_full = true;
        cp.embeddings = params.embeddings;
        if params.embeddings {
            cp.pooling_type = sys::LLAMA_POOLING_TYPE_MEAN;
        }
        if let Some(h) = hook {
            cp.cb_eval = Some(eval_callback);
            cp.cb_eval_user_data = h.as_ptr().cast::<c_void>();
        }
        // SAFETY: the model is live for 'm, which outlives the context; the callback's user data is a
        // heap `HookState` freed only after `llama_free` (see `Drop`).
        let raw = unsafe { sys::llama_init_from_model(model.raw(), cp) };
        let Some(ptr) = NonNull::new(raw) else {
            if let Some(h) = hook {
                // SAFETY: from `Box::into_raw` above and not shared: the context was not created.
                drop(unsafe { Box::from_raw(h.as_ptr()) });
            }
            return Err(LlmError::ContextFailed {
                n_ctx: params.n_ctx,
            });
        };
        // SAFETY: the params struct is a plain value; the pool is freed in `Drop` after the context that
        // uses it. A null pool (creation failed) leaves llama.cpp on its per-computation threads.
        let threadpool = unsafe {
            let mut tpp = sys::ggml_threadpool_params_default(n_threads);
            tpp.poll = 10;
            tpp.paused = true;
            let tp = NonNull::new(sys::ggml_threadpool_new(&mut tpp));
            if let Some(tp) = tp {
                sys::llama_attach_threadpool(ptr.as_ptr(), tp.as_ptr(), tp.as_ptr());
            }
            tp
        };
        // SAFETY: allocates a batch of `n_batch` tokens with one sequence id per token.
        let batch = unsafe { sys::llama_batch_init(n_batch as i32, 0, 1) };
        // SAFETY: live context.
        let n_ctx = unsafe { sys::llama_n_ctx(ptr.as_ptr()) };
        Ok(Context {
            ptr,
            model,
            hook,
            threadpool,
            batch,
            n_batch: n_batch as usize,
            n_ctx,
            kv_plan: 0,
            n_past: 0,
            plan_id: 0,
        })
    }

    /// The model this context runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Context size in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// The CPU threads llama.cpp decodes with (greedy answers can differ between thread counts:
    /// docs/evaluation.md, Findings).
    pub fn n_threads(&self) -> usize {
        // SAFETY: `ptr` is a live context.
        unsafe { sys::llama_n_threads(self.ptr.as_ptr()) }.max(0) as usize
    }

    fn hook_mut(&mut self) -> Option<&mut HookState> {
        // SAFETY: the state is only touched by the callback during `llama_decode`, which runs inside
        // methods holding `&mut self`; here no decode is running, so this is the only reference.
        self.hook.map(|h| unsafe { &mut *h.as_ptr() })
    }

    /// Install an edit plan for all following evaluations (prompt and generated tokens). Costs a
    /// pointer swap; the KV cache is cleared when it was computed under another plan.
    ///
    /// # Errors
    /// [`LlmError::PlanMismatch`] when the plan was built for another model shape, or
    /// [`LlmError::Callback`] on a context created without the hook.
    pub fn set_plan(&mut self, plan: Arc<EditPlan>) -> Result<(), LlmError> {
        let (n_layer, hidden) = (self.model.n_layer(), self.model.n_embd());
        if plan.n_layer() != n_layer || plan.hidden() != hidden {
            return Err(LlmError::PlanMismatch {
                plan_layers: plan.n_layer(),
                plan_hidden: plan.hidden(),
                n_layer,
                hidden,
            });
        }
        let id = plan.id();
        let Some(hook) = self.hook_mut() else {
            if plan.is_empty() {
                return Ok(());
            }
            return Err(LlmError::Callback(
                "this context was created without the edit hook".into(),
            ));
        };
        hook.set_plan(plan);
        self.plan_id = id;
        if self.kv_plan != id {
            self.clear();
        }
        Ok(())
    }

    /// Remove the edit plan (same as installing an empty one).
    pub fn clear_plan(&mut self) {
        let plan = Arc::new(EditPlan::empty(self.model.n_layer(), self.model.n_embd()));
        let _ = self.set_plan(plan);
    }

    /// Activate a LoRA adapter of this context's model with `scale` (replacing any other), or none.
    /// Clears the KV cache, which was computed without it.
    ///
    /// # Errors
    /// [`LlmError::Callback`] for an id of another model, or when llama.cpp refuses.
    pub fn set_lora(&mut self, lora: Option<(super::model::LoraId, f32)>) -> Result<(), LlmError> {
        let (mut ptrs, mut scales) = (Vec::new(), Vec::new());
        if let Some((id, scale)) = lora {
            let p = self
                .model
                .lora(id)
                .ok_or_else(|| LlmError::Callback("unknown LoRA adapter".into()))?;
            ptrs.push(p);
            scales.push(scale);
        }
        // SAFETY: live context; `ptrs` holds adapters loaded into this context's model (freed only with
        // it); both arrays have `ptrs.len()` elements.
        let rc = unsafe {
            sys::llama_set_adapters_lora(
                self.ptr.as_ptr(),
                ptrs.as_mut_ptr(),
                ptrs.len(),
                scales.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(LlmError::Callback(format!(
                "llama_set_adapters_lora failed with {rc}"
            )));
        }
        self.clear();
        Ok(())
    }

    /// Add `data` to every layer's output through llama.cpp's own control vector (in its graph, no
    /// callback): `n_embd` values per layer for layers `1..n_layer` (layer 0 is never steered), as
    /// [`crate::steer::EditPlan::control_vector`] writes them; `None` removes it. Clears the KV cache.
    ///
    /// # Errors
    /// [`LlmError::Callback`] when `data` is not `n_embd * (n_layer - 1)` values or llama.cpp refuses.
    pub fn set_control_vector(&mut self, data: Option<&[f32]>) -> Result<(), LlmError> {
        let n_embd = self.model.n_embd();
        let n_layer = self.model.n_layer();
        let rc = match data {
            Some(d) => {
                if d.len() != n_embd * n_layer.saturating_sub(1) {
                    return Err(LlmError::Callback(format!(
                        "a control vector of {} values for {} layers of {n_embd}",
                        d.len(),
                        n_layer
                    )));
                }
                // SAFETY: live context; `d` holds `d.len()` floats, which llama.cpp copies into its own
                // tensors before returning.
                unsafe {
                    sys::llama_set_adapter_cvec(
                        self.ptr.as_ptr(),
                        d.as_ptr(),
                        d.len(),
                        n_embd as i32,
                        1,
                        n_layer as i32 - 1,
                    )
                }
            }
            // SAFETY: live context; a null pointer clears the control vector.
            None => unsafe {
                sys::llama_set_adapter_cvec(
                    self.ptr.as_ptr(),
                    std::ptr::null(),
                    0,
                    n_embd as i32,
                    0,
                    0,
                )
            },
        };
        if rc != 0 {
            return Err(LlmError::Callback(format!(
                "llama_set_adapter_cvec failed with {rc}"
            )));
        }
        self.clear();
        Ok(())
    }

    /// Forget everything in the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: live context; the memory handle belongs to it.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) };
        self.n_past = 0;
        self.kv_plan = self.plan_id;
    }

    /// Drop positions `from..` from the KV cache, keeping the prefix before `from`.
    fn truncate(&mut self, from: usize) {
        if from >= self.n_past {
            return;
        }
        // SAFETY: live context; removing a position range of sequence 0 is always valid.
        unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr.as_ptr()), 0, from as i32, -1)
        };
        self.n_past = from;
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Append `tokens` to the KV cache (sequence 0, positions `n_past..`). `all_outputs` asks for the
    /// outputs (logits or embeddings) of every token; otherwise only of the last one of each batch.
    ///
    /// # Errors
    /// [`LlmError::ContextFull`], [`LlmError::Decode`], or an error recorded by the eval callback.
    pub fn eval(&mut self, tokens: &[Token], all_outputs: bool) -> Result<(), LlmError> {
        if tokens.is_empty() {
            return Ok(());
        }
        if self.kv_plan != self.plan_id {
            // never continue a state computed under another plan
            return Err(LlmError::Callback(
                "the KV cache was computed under another edit plan".into(),
            ));
        }
        let needed = self.n_past + tokens.len();
        if needed > self.n_ctx as usize {
            return Err(LlmError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        for chunk in tokens.chunks(self.n_batch) {
            let n = chunk.len();
            // SAFETY: the batch was allocated for `n_batch >= n` tokens with one seq id each, so every
            // index written below is in bounds.
            unsafe {
                for (i, &tok) in chunk.iter().enumerate() {
                    *self.batch.token.add(i) = tok;
                    *self.batch.pos.add(i) = (self.n_past + i) as i32;
                    *self.batch.n_seq_id.add(i) = 1;
                    *(*self.batch.seq_id.add(i)) = 0;
                    *self.batch.logits.add(i) = i8::from(all_outputs || i + 1 == n);
                }
            }
            self.batch.n_tokens = n as i32;
            if let Some(h) = self.hook_mut() {
                h.reset_hits();
            }
            if let Some(tp) = self.threadpool {
                // SAFETY: the pool is live and owned by this context; resuming a running pool is a no-op.
                unsafe { sys::ggml_threadpool_resume(tp.as_ptr()) };
            }
            // SAFETY: live context; the batch holds `n` initialised tokens. The callback may run during
            // this call; it touches only the hook state, which we do not borrow across the call.
            let status = unsafe { sys::llama_decode(self.ptr.as_ptr(), self.batch) };
            if let Some(tp) = self.threadpool {
                // SAFETY: as above. A paused pool's workers sleep instead of polling, so an idle context
                // does not take CPU from a busy one.
                unsafe { sys::ggml_threadpool_pause(tp.as_ptr()) };
            }
            if status != 0 {
                // a failed decode may leave partial state: drop it
                self.clear();
                return Err(if status == 1 {
                    LlmError::ContextFull {
                        needed,
                        n_ctx: self.n_ctx,
                    }
                } else {
                    LlmError::Decode(status)
                });
            }
            self.n_past += n;
            self.check_hook()?;
        }
        Ok(())
    }

    /// Decode one batch of several sequences' tokens, each row edited with its own plan (the KV cells
    /// of a sequence are then computed under its plan only, as long as every batch gives the sequence
    /// the same plan). The context must have been created with `n_seq` above every `seq` used and
    /// with the hook; the rows must fit one batch (`n_batch`). Read a row's logits with
    /// [`Context::sample_row`] or [`Context::row_logits`].
    ///
    /// # Errors
    /// An empty or oversized batch, a sequence id out of range, a plan of another model's shape, a
    /// failed decode.
    pub fn decode_rows(&mut self, rows: &[BatchRow]) -> Result<(), LlmError> {
        if rows.is_empty() || rows.len() > self.n_batch {
            return Err(LlmError::Callback(format!(
                "a batch of {} rows (1 to {} fit)",
                rows.len(),
                self.n_batch
            )));
        }
        // SAFETY: live context.
        let n_seq = unsafe { sys::llama_n_seq_max(self.ptr.as_ptr()) } as i32;
        let (n_layer, hidden) = (self.model.n_layer(), self.model.n_embd());
        for r in rows {
            if !(0..n_seq).contains(&r.seq) {
                return Err(LlmError::Callback(format!(
                    "sequence {} out of range: the context has {n_seq}",
                    r.seq
                )));
            }
            if r.plan.n_layer() != n_layer || r.plan.hidden() != hidden {
                return Err(LlmError::PlanMismatch {
                    plan_layers: r.plan.n_layer(),
                    plan_hidden: r.plan.hidden(),
                    n_layer,
                    hidden,
                });
            }
        }
        // SAFETY: the batch was allocated for `n_batch >= rows.len()` tokens with one seq id each.
        unsafe {
            for (i, r) in rows.iter().enumerate() {
                *self.batch.token.add(i) = r.token;
                *self.batch.pos.add(i) = r.pos as i32;
                *self.batch.n_seq_id.add(i) = 1;
                *(*self.batch.seq_id.add(i)) = r.seq;
                *self.batch.logits.add(i) = i8::from(r.output);
            }
        }
        self.batch.n_tokens = rows.len() as i32;
        let Some(h) = self.hook_mut() else {
            return Err(LlmError::Callback(
                "per-row edits need a context created with the hook".into(),
            ));
        };
        h.reset_hits();
        h.set_rows(
            rows.iter().map(|r| r.plan.clone()).collect(),
            rows.iter()
                .filter(|r| r.output)
                .map(|r| r.plan.clone())
                .collect(),
        );
        if let Some(tp) = self.threadpool {
            // SAFETY: as in `eval`.
            unsafe { sys::ggml_threadpool_resume(tp.as_ptr()) };
        }
        // SAFETY: live context; the batch holds `rows.len()` initialised tokens.
        let status = unsafe { sys::llama_decode(self.ptr.as_ptr(), self.batch) };
        if let Some(tp) = self.threadpool {
            // SAFETY: as in `eval`.
            unsafe { sys::ggml_threadpool_pause(tp.as_ptr()) };
        }
        let result = if status == 0 {
            self.check_hook()
        } else {
            Err(LlmError::Decode(status))
        };
        if let Some(h) = self.hook_mut() {
            h.clear_rows();
        }
        result
    }

    /// The logits of row `row` of the last [`Context::decode_rows`] batch (a row with `output`).
    pub fn row_logits(&self, row: usize) -> Option<&[f32]> {
        let n_vocab = self.model.info().n_vocab;
        // SAFETY: live context; llama.cpp returns null for a row without logits.
        let p = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), row as i32) };
        if p.is_null() {
            return None;
        }
        // SAFETY: `n_vocab` floats at a non-null logits row, valid until the next decode (which needs
        // `&mut self`).
        Some(unsafe { std::slice::from_raw_parts(p, n_vocab) })
    }

    /// Forget everything sequence `seq` holds in the KV cache (its cells are free for another).
    pub fn remove_seq(&mut self, seq: i32) {
        // SAFETY: live context; removing an unknown or empty sequence is a no-op.
        unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr.as_ptr()), seq, -1, -1);
        }
    }

    /// Drop sequence `seq`'s cells from position `from` on, keeping its prefix `0..from` (for a
    /// request that continues a cached conversation).
    pub fn truncate_seq(&mut self, seq: i32, from: usize) {
        let from = i32::try_from(from).unwrap_or(i32::MAX);
        // SAFETY: live context; positions past the sequence's end remove nothing.
        unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr.as_ptr()), seq, from, -1);
        }
    }

    /// Runs after every decode: no allocation unless there is an error to report.
    fn check_hook(&mut self) -> Result<(), LlmError> {
        let model = self.model;
        let Some(h) = self.hook_mut() else {
            return Ok(());
        };
        if let Some(e) = h.error.take() {
            return Err(LlmError::Callback(e));
        }
        if let Some(layer) = h.missed_layer() {
            return Err(LlmError::NodeNotFound {
                arch: model.info().arch.clone(),
                node: model.mlp_node().name,
                layer,
            });
        }
        Ok(())
    }

    /// Teacher-forced log-probabilities: after the prefix already in the KV cache, read `prompt` and
    /// then `answer`, and return `log p(answer[j] | prefix, prompt, answer[..j])` for every answer token
    /// (natural log). The cache is restored to the prefix afterwards. No sampling: this is how well the
    /// model, under the current edit plan, expects a given answer.
    ///
    /// # Errors
    /// [`LlmError::Callback`] for an empty `prompt` (the first answer token needs a position before it)
    /// or an answer longer than a batch; see [`Context::eval`].
    pub fn score_after_prefix(
        &mut self,
        prompt: &[Token],
        answer: &[Token],
        bias: &[(Token, f32)],
    ) -> Result<Vec<f32>, LlmError> {
        self.check_scorable(prompt, answer)?;
        let keep = self.n_past;
        let result = (|| {
            self.eval(prompt, false)?;
            let first = self.last_logits();
            self.score_answer(&first, answer, |_| bias.to_vec())
        })();
        self.truncate(keep);
        result
    }

    /// Teacher-forced scores of several possible answers to one prompt: after the prefix already in
    /// the KV cache, read `prompt` once, then each of `choices` after it, and return each choice's
    /// summed `log p(choice[j] | prefix, prompt, choice[..j])` (natural log; how likely the model
    /// makes the reply open with exactly that choice), with `bias` added to every logit row. The
    /// cache is restored to the prefix.
    ///
    /// # Errors
    /// As [`Context::score_after_prefix`], for an empty `prompt` or a choice longer than a batch.
    pub fn score_choices_after_prefix(
        &mut self,
        prompt: &[Token],
        choices: &[Vec<Token>],
        bias: &[(Token, f32)],
    ) -> Result<Vec<f64>, LlmError> {
        for c in choices {
            self.check_scorable(prompt, c)?;
        }
        let keep = self.n_past;
        let result = (|| {
            self.eval(prompt, false)?;
            let first = self.last_logits();
            let after = self.n_past;
            let mut out = Vec::with_capacity(choices.len());
            for c in choices {
                let lp = self.score_answer(&first, c, |_| bias.to_vec());
                self.truncate(after);
                out.push(lp?.iter().map(|&x| f64::from(x)).sum());
            }
            Ok(out)
        })();
        self.truncate(keep);
        result
    }

    /// Logits of the last token evaluated with an output.
    pub fn last_logits(&self) -> Vec<f32> {
        let n_vocab = self.model.info().n_vocab;
        // SAFETY: live context; after a successful `eval` the last output exists and has `n_vocab` logits.
        let p = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), -1) };
        if p.is_null() {
            return Vec::new();
        }
        // SAFETY: llama.cpp guarantees `n_vocab` floats at a non-null logits row.
        unsafe { std::slice::from_raw_parts(p, n_vocab) }.to_vec()
    }

    /// Generate a continuation of `prompt` (raw text: apply a chat template first for chat models).
    /// The KV cache is cleared first. `on_text` receives the text as it is produced.
    ///
    /// # Errors
    /// See [`Context::eval`].
    pub fn generate(
        &mut self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, LlmError> {
        let tokens = self.tokenize_prompt(prompt)?;
        self.clear();
        self.generate_tokens(&tokens, opts, on_text)
    }

    /// Tokenize a prompt the way [`Context::generate`] does (BOS where the model wants one, special
    /// tokens parsed, no doubled BOS when the template already writes one).
    ///
    /// # Errors
    /// [`LlmError::Tokenize`].
    pub fn tokenize_prompt(&self, prompt: &str) -> Result<Vec<Token>, LlmError> {
        let mut tokens = self.model.tokenize(prompt, true, true)?;
        if tokens.len() >= 2 && tokens[0] == tokens[1] && Some(tokens[0]) == self.model.bos() {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// The limits of a teacher-forced score: a prompt before the answer (its first token needs a
    /// position before it) and an answer that fits one batch.
    fn check_scorable(&self, prompt: &[Token], answer: &[Token]) -> Result<(), LlmError> {
        if prompt.is_empty() {
            return Err(LlmError::Callback(
                "scoring an answer needs a prompt before it".into(),
            ));
        }
        if answer.len() > self.n_batch {
            return Err(LlmError::Callback(format!(
                "an answer of {} tokens is longer than a batch ({})",
                answer.len(),
                self.n_batch
            )));
        }
        Ok(())
    }

    /// `log p(answer[j] | ...)` for every answer token, with `bias_at(j)` added to the logits that
    /// predict token j: `first` (the prompt's last logits) predict `answer[0]`, and the answer's
    /// tokens but the last are read after the cache with outputs for the rest.
    fn score_answer(
        &mut self,
        first: &[f32],
        answer: &[Token],
        bias_at: impl Fn(usize) -> Vec<(Token, f32)>,
    ) -> Result<Vec<f32>, LlmError> {
        let mut out = Vec::with_capacity(answer.len());
        let Some((_, rest)) = answer.split_last() else {
            return Ok(out);
        };
        out.push(log_softmax_biased(first, &bias_at(0), answer[0]));
        if !rest.is_empty() {
            // answer tokens 0..n-1 are read with outputs: row j predicts answer[j + 1]
            self.eval(rest, true)?;
            let n_vocab = self.model.info().n_vocab;
            for (j, &next) in answer[1..].iter().enumerate() {
                // SAFETY: live context; the batch just evaluated had `rest.len()` tokens, all with
                // outputs, so output row j exists and holds `n_vocab` logits.
                let row = unsafe {
                    let p = sys::llama_get_logits_ith(self.ptr.as_ptr(), j as i32);
                    if p.is_null() {
                        return Err(LlmError::Callback(format!("no logits for row {j}")));
                    }
                    std::slice::from_raw_parts(p, n_vocab)
                };
                out.push(log_softmax_biased(row, &bias_at(j + 1), next));
            }
        }
        Ok(out)
    }

    /// Generate after the tokens already in the KV cache: evaluate `tokens`, then sample. Afterwards
    /// the cache holds the prefix that was there before plus nothing else (the prompt part and the
    /// answer are removed), so several answers can share one evaluated prefix.
    ///
    /// # Errors
    /// See [`Context::eval`].
    pub fn generate_after_prefix(
        &mut self,
        tokens: &[Token],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, LlmError> {
        let keep = self.n_past;
        let out = self.generate_tokens(tokens, opts, on_text);
        self.truncate(keep);
        out
    }

    /// [`Context::generate_after_prefix`] and [`Context::score_after_prefix`] of the same `prompt` in
    /// one read of it: the greedy (or sampled) reply, and the log-likelihood of each token of `answer`
    /// teacher-forced after the prompt, under `opts`'s logit bias as sampling applies it (with
    /// [`GenerateOptions::bias_until_used`], without the entries of the answer's tokens before it).
    /// The same numbers as the two calls, as the prompt's cache and logits are the same; the cache
    /// is restored to the prefix.
    ///
    /// # Errors
    /// As [`Context::score_after_prefix`] and [`Context::generate_after_prefix`].
    pub fn generate_and_score_after_prefix(
        &mut self,
        prompt: &[Token],
        opts: &GenerateOptions,
        answer: &[Token],
    ) -> Result<(Generation, Vec<f32>), LlmError> {
        self.check_scorable(prompt, answer)?;
        let keep = self.n_past;
        let result = (|| {
            let mut prompt_logits = Vec::new();
            let g = self.generate_tokens_keeping(prompt, opts, |_| {}, Some(&mut prompt_logits))?;
            // back to the prompt, whose last logits predict the answer's first token
            self.truncate(keep + prompt.len());
            // the bias in force before answer token j
            let bias_at = |j: usize| -> Vec<(Token, f32)> {
                if opts.bias_until_used {
                    opts.logit_bias
                        .iter()
                        .copied()
                        .filter(|(t, _)| !answer[..j].contains(t))
                        .collect()
                } else {
                    opts.logit_bias.clone()
                }
            };
            Ok((g, self.score_answer(&prompt_logits, answer, bias_at)?))
        })();
        self.truncate(keep);
        result
    }

    fn generate_tokens(
        &mut self,
        tokens: &[Token],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, LlmError> {
        self.generate_tokens_keeping(tokens, opts, on_text, None)
    }

    /// [`Context::generate_tokens`], copying the prompt's last logits into `prompt_logits` if given.
    fn generate_tokens_keeping(
        &mut self,
        tokens: &[Token],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str),
        prompt_logits: Option<&mut Vec<f32>>,
    ) -> Result<Generation, LlmError> {
        let sampler = Sampler::new(opts, self.model.info().n_vocab);
        self.eval(tokens, false)?;
        if let Some(out) = prompt_logits {
            *out = self.last_logits();
        }
        let mut text = TextStream::new(&opts.stop);
        let mut stop = StopReason::MaxTokens;
        for _ in 0..opts.max_tokens {
            // SAFETY: live sampler and context; -1 is the last output, which `eval` guarantees.
            let tok =
                unsafe { sys::llama_sampler_sample(sampler.0.as_ptr(), self.ptr.as_ptr(), -1) };
            if self.model.is_eog(tok) {
                stop = StopReason::EndOfGeneration;
                break;
            }
            let (piece, stopped) = text.push(self.model, tok);
            if let Some(piece) = piece {
                on_text(piece);
            }
            if stopped {
                stop = StopReason::StopString;
                break;
            }
            self.eval(&[tok], false)?;
        }
        let (rest, text, out_tokens) = text.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(Generation {
            text,
            tokens: out_tokens,
            n_prompt: tokens.len(),
            stop,
        })
    }

    /// Sample the next token of a sequence from row `row` of the last [`Context::decode_rows`] batch
    /// (a row with `output`), with that sequence's own sampler.
    pub fn sample_row(&mut self, sampler: &SeqSampler, row: usize) -> Token {
        // SAFETY: live sampler and context; llama.cpp checks the row index against its outputs.
        unsafe { sys::llama_sampler_sample(sampler.0.0.as_ptr(), self.ptr.as_ptr(), row as i32) }
    }

    /// Read `tokens` from an empty cache and capture the MLP output of `request.layers` at every
    /// position. The edit plan, if any, is applied before capture (the capture sees what the next layer
    /// sees).
    ///
    /// # Errors
    /// [`LlmError::LayerOutOfRange`], or see [`Context::eval`].
    pub fn capture(
        &mut self,
        tokens: &[Token],
        request: &CaptureRequest,
    ) -> Result<Capture, LlmError> {
        self.clear();
        self.capture_after_prefix(tokens, request)
    }

    /// Capture the MLP outputs of `tokens` read after the prefix already in the KV cache; the prefix is
    /// reused, not recomputed, and the cache is restored to the prefix afterwards.
    ///
    /// # Errors
    /// [`LlmError::LayerOutOfRange`], or see [`Context::eval`].
    pub fn capture_after_prefix(
        &mut self,
        tokens: &[Token],
        request: &CaptureRequest,
    ) -> Result<Capture, LlmError> {
        let n_layer = self.model.n_layer();
        if let Some(&layer) = request.layers.iter().find(|&&l| l >= n_layer) {
            return Err(LlmError::LayerOutOfRange { layer, n_layer });
        }
        let Some(hook) = self.hook_mut() else {
            return Err(LlmError::Callback(
                "this context was created without the edit hook".into(),
            ));
        };
        hook.set_capture(&request.layers);
        // The last layer's MLP runs only on the rows that produce output: ask for all of them then.
        let all = request.layers.contains(&(n_layer - 1));
        let keep = self.n_past;
        let result = self.eval(tokens, all);
        self.truncate(keep);
        let hook = self.hook_mut().expect("checked above");
        let captured: Vec<Vec<f32>> = request
            .layers
            .iter()
            .map(|&l| std::mem::take(&mut hook.captured[l]))
            .collect();
        hook.set_capture(&[]);
        result?;
        let hidden = self.model.n_embd();
        for (rows, &layer) in captured.iter().zip(&request.layers) {
            if rows.len() != tokens.len() * hidden {
                return Err(LlmError::Callback(format!(
                    "layer {layer}: captured {} rows for {} tokens",
                    rows.len() / hidden.max(1),
                    tokens.len()
                )));
            }
        }
        Ok(Capture {
            hidden,
            n_pos: tokens.len(),
            layers: request.layers.clone(),
            data: captured,
        })
    }

    /// Diagnostic: read `tokens` from an empty cache and return, for each node name (`l_out-3`,
    /// `ffn_inp-4`, ...), the values that node held, all positions concatenated. The edit plan applies as
    /// usual. Slow (every node name is compared); meant for tests and for checking a new architecture.
    ///
    /// # Errors
    /// See [`Context::eval`].
    pub fn probe(&mut self, tokens: &[Token], names: &[&str]) -> Result<Vec<Vec<f32>>, LlmError> {
        let Some(hook) = self.hook_mut() else {
            return Err(LlmError::Callback(
                "this context was created without the edit hook".into(),
            ));
        };
        hook.probes = names
            .iter()
            .map(|n| {
                let mut name = [0 as std::ffi::c_char; 64];
                for (dst, &b) in name.iter_mut().zip(n.as_bytes().iter().take(63)) {
                    *dst = b as std::ffi::c_char;
                }
                (name, Vec::new())
            })
            .collect();
        self.clear();
        let result = self.eval(tokens, true);
        self.clear();
        let hook = self.hook_mut().expect("checked above");
        let probes = std::mem::take(&mut hook.probes);
        result?;
        Ok(probes.into_iter().map(|(_, v)| v).collect())
    }

    /// Read `tokens` into the (cleared) KV cache as a prefix that later calls build on
    /// ([`Context::capture_after_prefix`], [`Context::generate_after_prefix`]).
    ///
    /// # Errors
    /// See [`Context::eval`].
    pub fn load_prefix(&mut self, tokens: &[Token]) -> Result<(), LlmError> {
        self.clear();
        self.eval(tokens, false)
    }

    /// The mean-pooled embedding of `text` (context created with `embeddings: true`).
    ///
    /// # Errors
    /// See [`Context::eval`]; [`LlmError::Callback`] when the context does not compute embeddings.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, LlmError> {
        let tokens = self.model.tokenize(text, true, false)?;
        self.clear();
        self.eval(&tokens, true)?;
        // SAFETY: live context; sequence 0 was just evaluated.
        let p = unsafe { sys::llama_get_embeddings_seq(self.ptr.as_ptr(), 0) };
        if p.is_null() {
            return Err(LlmError::Callback(
                "this context does not compute embeddings".into(),
            ));
        }
        // SAFETY: a pooled embedding row holds `n_embd` floats.
        let v = unsafe { std::slice::from_raw_parts(p, self.model.n_embd()) }.to_vec();
        self.clear();
        Ok(v)
    }
}

/// A llama.cpp sampler chain, freed on drop.
struct Sampler(NonNull<sys::llama_sampler>);

/// The sampler of one sequence of a batch ([`Context::sample_row`]): greedy at temperature 0, else
/// top-k 40, top-p, temperature and a seeded draw, as [`Context::generate`].
pub struct SeqSampler(Sampler);

impl SeqSampler {
    /// The sampler of `opts` for a model of `n_vocab` tokens.
    pub fn new(opts: &GenerateOptions, n_vocab: usize) -> SeqSampler {
        SeqSampler(Sampler::new(opts, n_vocab))
    }
}

// SAFETY: a sampler chain is plain heap state with no thread affinity; it is used by one thread at
// a time (`&mut` through the owning sequence).
unsafe impl Send for SeqSampler {}

/// Generated tokens turned into text as it streams: whole UTF-8 characters only, holding back what
/// could still become a stop string, and cut before the first stop string.
#[derive(Debug)]
pub struct TextStream {
    bytes: Vec<u8>,
    tokens: Vec<Token>,
    emitted: usize,
    stop: Vec<String>,
    hold: usize,
    cut: Option<usize>,
}

impl TextStream {
    pub fn new(stop: &[String]) -> TextStream {
        TextStream {
            bytes: Vec::new(),
            tokens: Vec::new(),
            emitted: 0,
            stop: stop.to_vec(),
            hold: stop
                .iter()
                .map(|s| s.len().saturating_sub(1))
                .max()
                .unwrap_or(0),
            cut: None,
        }
    }

    /// Add a generated token: the text that can be shown now, and whether a stop string appeared
    /// (the stream is then over).
    pub fn push(&mut self, model: &Model, tok: Token) -> (Option<&str>, bool) {
        self.tokens.push(tok);
        self.bytes.extend_from_slice(&model.token_bytes(tok));
        // stop strings: search the text produced so far (answers are short; this stays cheap)
        if !self.stop.is_empty() {
            let text = String::from_utf8_lossy(&self.bytes);
            if let Some(at) = self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                self.cut = Some(at);
                return (None, true);
            }
        }
        let valid = match std::str::from_utf8(&self.bytes[self.emitted..]) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let mut upto = self.emitted + valid.saturating_sub(self.hold);
        while upto > self.emitted && std::str::from_utf8(&self.bytes[self.emitted..upto]).is_err() {
            upto -= 1;
        }
        if upto > self.emitted {
            let from = std::mem::replace(&mut self.emitted, upto);
            return (std::str::from_utf8(&self.bytes[from..upto]).ok(), false);
        }
        (None, false)
    }

    /// The text not shown yet, the whole text, and the tokens.
    pub fn finish(self) -> (String, String, Vec<Token>) {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if let Some(at) = self.cut {
            text.truncate(at);
        }
        let rest = text.get(self.emitted..).unwrap_or_default().to_string();
        (rest, text, self.tokens)
    }
}

impl Sampler {
    fn new(opts: &GenerateOptions, n_vocab: usize) -> Sampler {
        let bias: Vec<sys::llama_logit_bias> = opts
            .logit_bias
            .iter()
            .filter(|(t, _)| usize::try_from(*t).is_ok_and(|t| t < n_vocab))
            .map(|&(token, bias)| sys::llama_logit_bias { token, bias })
            .collect();
        // SAFETY: the chain takes ownership of every sampler added to it; all constructors return fresh
        // samplers and have no preconditions (the logit-bias sampler copies its array, whose tokens
        // are checked against the vocabulary above).
        unsafe {
            let chain = sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params());
            if !bias.is_empty() && opts.bias_until_used {
                sys::llama_sampler_chain_add(chain, until_used_sampler(&bias));
            } else if !bias.is_empty() {
                sys::llama_sampler_chain_add(
                    chain,
                    sys::llama_sampler_init_logit_bias(
                        n_vocab as i32,
                        bias.len() as i32,
                        bias.as_ptr(),
                    ),
                );
            }
            if opts.temperature <= 0.0 {
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_greedy());
            } else {
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_top_k(40));
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_top_p(opts.top_p, 1));
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_temp(opts.temperature));
                sys::llama_sampler_chain_add(chain, sys::llama_sampler_init_dist(opts.seed));
            }
            Sampler(NonNull::new(chain).expect("llama_sampler_chain_init returned null"))
        }
    }
}

/// A logit bias whose entries hold until their token is sampled ([`GenerateOptions::bias_until_used`]):
/// a llama.cpp sampler of our own, whose `accept` spends the bias of the accepted token.
struct UntilUsed {
    /// Every entry, in token order (what `reset` restores).
    all: Vec<(Token, f32)>,
    /// The entries whose token has not been sampled yet, in token order.
    active: Vec<(Token, f32)>,
}

static UNTIL_USED: sys::llama_sampler_i = sys::llama_sampler_i {
    name: Some(until_used_name),
    accept: Some(until_used_accept),
    apply: Some(until_used_apply),
    reset: Some(until_used_reset),
    clone: Some(until_used_clone),
    free: Some(until_used_free),
    // SAFETY: the remaining members are optional callbacks, and an all-zero `Option<fn>` is `None`.
    ..unsafe { std::mem::zeroed() }
};

fn until_used_sampler(bias: &[sys::llama_logit_bias]) -> *mut sys::llama_sampler {
    let mut all: Vec<(Token, f32)> = bias.iter().map(|b| (b.token, b.bias)).collect();
    all.sort_by_key(|&(t, _)| t);
    all.dedup_by_key(|&mut (t, _)| t);
    let state = Box::new(UntilUsed {
        active: all.clone(),
        all,
    });
    // SAFETY: the interface is a static that llama.cpp only reads; the state is freed by `free`.
    unsafe {
        sys::llama_sampler_init(
            std::ptr::addr_of!(UNTIL_USED).cast_mut(),
            Box::into_raw(state).cast(),
        )
    }
}

/// # Safety
/// `smpl` is a live sampler made by [`until_used_sampler`].
unsafe fn until_used_state<'a>(smpl: *const sys::llama_sampler) -> &'a mut UntilUsed {
    // SAFETY: per the contract, `ctx` is the `UntilUsed` box made with the sampler.
    unsafe { &mut *(*smpl).ctx.cast::<UntilUsed>() }
}

unsafe extern "C" fn until_used_name(_: *const sys::llama_sampler) -> *const std::os::raw::c_char {
    c"chameleon-bias-until-used".as_ptr()
}

unsafe extern "C" fn until_used_accept(smpl: *mut sys::llama_sampler, token: sys::llama_token) {
    // SAFETY: llama.cpp calls back with the sampler this interface was installed on.
    let state = unsafe { until_used_state(smpl) };
    if let Ok(i) = state.active.binary_search_by_key(&token, |&(t, _)| t) {
        state.active.remove(i);
    }
}

unsafe extern "C" fn until_used_apply(
    smpl: *mut sys::llama_sampler,
    cur_p: *mut sys::llama_token_data_array,
) {
    // SAFETY: llama.cpp calls back with this interface's sampler and a live candidate array of
    // `size` entries.
    let (state, data) = unsafe {
        let cur = &mut *cur_p;
        (
            until_used_state(smpl),
            std::slice::from_raw_parts_mut(cur.data, cur.size),
        )
    };
    for &(token, bias) in &state.active {
        // the candidates are in token order before any sorting sampler; search otherwise
        let at = usize::try_from(token)
            .ok()
            .filter(|&i| data.get(i).is_some_and(|d| d.id == token))
            .or_else(|| data.iter().position(|d| d.id == token));
        if let Some(i) = at {
            data[i].logit += bias;
        }
    }
}

unsafe extern "C" fn until_used_reset(smpl: *mut sys::llama_sampler) {
    // SAFETY: as in `until_used_accept`.
    let state = unsafe { until_used_state(smpl) };
    state.active = state.all.clone();
}

unsafe extern "C" fn until_used_clone(smpl: *const sys::llama_sampler) -> *mut sys::llama_sampler {
    // SAFETY: as in `until_used_accept`.
    let state = unsafe { until_used_state(smpl) };
    let copy = Box::new(UntilUsed {
        all: state.all.clone(),
        active: state.active.clone(),
    });
    // SAFETY: as in `until_used_sampler`.
    unsafe {
        sys::llama_sampler_init(
            std::ptr::addr_of!(UNTIL_USED).cast_mut(),
            Box::into_raw(copy).cast(),
        )
    }
}

unsafe extern "C" fn until_used_free(smpl: *mut sys::llama_sampler) {
    // SAFETY: the box was made by `until_used_sampler` or `until_used_clone` and is freed once here.
    unsafe { drop(Box::from_raw((*smpl).ctx.cast::<UntilUsed>())) }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: created by `llama_sampler_chain_init`, freed once (frees the samplers it owns).
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

/// [`log_softmax_at`] of the logits with `bias` added (tokens outside the logits are ignored), as
/// the sampler of [`GenerateOptions::logit_bias`] sees them.
fn log_softmax_biased(logits: &[f32], bias: &[(Token, f32)], token: Token) -> f32 {
    if bias.is_empty() {
        return log_softmax_at(logits, token);
    }
    let mut biased = logits.to_vec();
    for &(t, b) in bias {
        if let Some(l) = usize::try_from(t).ok().and_then(|t| biased.get_mut(t)) {
            *l += b;
        }
    }
    log_softmax_at(&biased, token)
}

/// `log softmax(logits)[token]`, computed stably in f64; `-inf` for a token outside the logits.
fn log_softmax_at(logits: &[f32], token: Token) -> f32 {
    let Some(&x) = usize::try_from(token).ok().and_then(|t| logits.get(t)) else {
        return f32::NEG_INFINITY;
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    (f64::from(x - max) - sum.ln()) as f32
}
