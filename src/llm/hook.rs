//! The eval callback: find each decoder layer's MLP output in llama.cpp's graph, and edit or capture it.
//!
//! llama.cpp's scheduler calls the callback twice per node: first it *asks* whether we want the node
//! (`ask = true`), and for a node we want it computes the graph up to that node and calls again with the
//! computed tensor (`ask = false`). The next nodes read the tensor's buffer, so an edit made there
//! propagates through the rest of the forward pass. Every node we ask for splits the graph there, so the
//! ask path is a few byte comparisons, no allocation, and we only ask for layers that are edited or
//! captured.
//!
//! Which node is the MLP output (the block's own output, before the residual add):
//! - llama, qwen2, mistral, phi3, ...: `ffn_out-N`, the `W_down h` product. In llama's builder the
//!   residual sum after it can carry the same name (`ffn_out-N`, with a control vector active); that sum is
//!   an `ADD` one of whose sources is the MLP output node itself, which is how we tell them apart.
//! - gemma2/gemma3: `ffn_post_norm-N`, the output of the norm applied after the down projection (the
//!   `ffn_out-N` there is *not* the block's output).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use std::ffi::c_void;

use llama_cpp_sys_2 as sys;

use crate::steer::EditPlan;

/// Where an architecture's MLP output sits in llama.cpp's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlpNode {
    /// Node name without the `-N` layer suffix.
    pub name: &'static str,
    /// True when a norm follows the down projection (gemma2/3): the edit is then not a weight update
    /// of `ffn_down`, and cannot be exported as a LoRA adapter.
    pub post_norm: bool,
}

/// The MLP-output node of an architecture (by `general.architecture`).
pub fn mlp_node(arch: &str) -> MlpNode {
    match arch {
        "gemma2" | "gemma3" => MlpNode {
            name: "ffn_post_norm",
            post_norm: true,
        },
        _ => MlpNode {
            name: "ffn_out",
            post_norm: false,
        },
    }
}

const WANT_EDIT: u8 = 1;
const WANT_CAPTURE: u8 = 2;

/// State the callback reads and writes. Owned by the context through a raw pointer (see `Context`);
/// accessed only from the thread that runs `llama_decode` while a decode runs, and through `&mut Context`
/// otherwise, never both at once.
pub(crate) struct HookState {
    prefix: &'static [u8],
    hidden: usize,
    /// Per layer: `WANT_EDIT | WANT_CAPTURE` bits.
    want: Vec<u8>,
    pub(crate) plan: Arc<EditPlan>,
    /// Several sequences in one batch (see `Context::decode_rows`): the plan of each row of the batch,
    /// and of each row that produces an output, in order (a model's last layer computes only those).
    /// Empty: `plan` edits every row.
    pub(crate) rows: Vec<Arc<EditPlan>>,
    pub(crate) out_rows: Vec<Arc<EditPlan>>,
    /// Captured rows per layer (row-major, `hidden` per row), in the order llama.cpp computed them.
    pub(crate) captured: Vec<Vec<f32>>,
    /// Data calls per layer since the last reset: lets the caller check every wanted layer was found.
    pub(crate) hits: Vec<u32>,
    /// Staging buffer for tensors that do not live in host memory (GPU backends).
    scratch: Vec<f32>,
    /// First error seen inside the callback (it cannot return one through C).
    pub(crate) error: Option<String>,
    /// Diagnostic probes: nodes wanted by exact name, and what they held (see `Context::probe`).
    pub(crate) probes: Vec<([std::ffi::c_char; 64], Vec<f32>)>,
    /// `CHAMELEON_TRACE_NODES=1`: print every node the scheduler offers (name, op, shape) to stderr, to
    /// find the MLP output of an architecture chameleon does not know yet.
    trace: bool,
}

impl HookState {
    pub(crate) fn new(node: MlpNode, n_layer: usize, hidden: usize) -> Self {
        HookState {
            prefix: node.name.as_bytes(),
            hidden,
            want: vec![0; n_layer],
            plan: Arc::new(EditPlan::empty(n_layer, hidden)),
            rows: Vec::new(),
            out_rows: Vec::new(),
            captured: vec![Vec::new(); n_layer],
            hits: vec![0; n_layer],
            scratch: Vec::new(),
            error: None,
            probes: Vec::new(),
            trace: std::env::var_os("CHAMELEON_TRACE_NODES").is_some_and(|v| v == "1"),
        }
    }

    /// Install `plan`; its layers are edited from the next decode on.
    pub(crate) fn set_plan(&mut self, plan: Arc<EditPlan>) {
        for w in &mut self.want {
            *w &= !WANT_EDIT;
        }
        for e in plan.edits() {
            self.want[e.layer] |= WANT_EDIT;
        }
        self.plan = plan;
    }

    /// Edit each row of the next batch with its own plan (`rows`, one per token of the batch, and
    /// `out_rows`, one per token with an output); the layers of every plan are wanted. `clear_rows`
    /// returns to the single plan.
    pub(crate) fn set_rows(&mut self, rows: Vec<Arc<EditPlan>>, out_rows: Vec<Arc<EditPlan>>) {
        for w in &mut self.want {
            *w &= !WANT_EDIT;
        }
        for plan in &rows {
            for e in plan.edits() {
                self.want[e.layer] |= WANT_EDIT;
            }
        }
        self.rows = rows;
        self.out_rows = out_rows;
    }

    /// Back to the single plan after a batch of several sequences.
    pub(crate) fn clear_rows(&mut self) {
        self.rows.clear();
        self.out_rows.clear();
        let plan = self.plan.clone();
        self.set_plan(plan);
    }

    /// Capture the given layers from the next decode on (replacing an earlier request), or none.
    pub(crate) fn set_capture(&mut self, layers: &[usize]) {
        for w in &mut self.want {
            *w &= !WANT_CAPTURE;
        }
        for &l in layers {
            self.want[l] |= WANT_CAPTURE;
        }
        for c in &mut self.captured {
            c.clear();
        }
    }

    pub(crate) fn reset_hits(&mut self) {
        self.hits.iter_mut().for_each(|h| *h = 0);
        self.error = None;
    }

    /// Layers that are wanted but got no data call in the last decode.
    pub(crate) fn missed_layer(&self) -> Option<usize> {
        (0..self.want.len()).find(|&l| self.want[l] != 0 && self.hits[l] == 0)
    }

    /// The layer of `t` if it is a wanted MLP-output node.
    #[inline]
    fn wanted_layer(&self, t: &sys::ggml_tensor) -> Option<usize> {
        let layer = layer_of(&t.name, self.prefix)?;
        if *self.want.get(layer)? == 0 {
            return None;
        }
        // the residual sum can carry the MLP output's name: it is an ADD fed by that very node
        if t.op == sys::GGML_OP_ADD && t.src[..2].iter().any(|&s| same_name(s, &t.name)) {
            return None;
        }
        Some(layer)
    }

    fn on_data(&mut self, t: &mut sys::ggml_tensor, layer: usize) -> Result<(), String> {
        self.hits[layer] += 1;
        let d = self.hidden;
        if t.type_ != sys::GGML_TYPE_F32 || t.ne[0] as usize != d {
            return Err(format!(
                "layer {layer}: expected f32 rows of {d}, got type {} with {} columns",
                t.type_, t.ne[0]
            ));
        }
        // SAFETY: `t` is a live tensor handed to us by the scheduler for the duration of the call.
        if !unsafe { sys::ggml_is_contiguous(t) } {
            return Err(format!("layer {layer}: MLP output is not contiguous"));
        }
        let n = (t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]) as usize;
        let want = self.want[layer];
        // SAFETY: a null buffer would mean an unallocated tensor; `ggml_backend_buffer_is_host` only
        // reads the buffer's type.
        let host = !t.buffer.is_null() && unsafe { sys::ggml_backend_buffer_is_host(t.buffer) };
        if host && !t.data.is_null() {
            // SAFETY: host memory, contiguous f32 of `n` elements (checked above), computed and not
            // touched by any other thread until we return (the scheduler waits for us).
            let rows = unsafe { std::slice::from_raw_parts_mut(t.data.cast::<f32>(), n) };
            self.edit_and_capture(layer, want, rows);
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.resize(n, 0.0);
            // SAFETY: `scratch` holds exactly `n * 4 == ggml_nbytes(t)` bytes (contiguous f32).
            unsafe {
                sys::ggml_backend_tensor_get(t, scratch.as_mut_ptr().cast::<c_void>(), 0, n * 4)
            };
            self.edit_and_capture(layer, want, &mut scratch);
            if want & WANT_EDIT != 0 {
                // SAFETY: as above, writing back the same number of bytes.
                unsafe {
                    sys::ggml_backend_tensor_set(t, scratch.as_ptr().cast::<c_void>(), 0, n * 4)
                };
            }
            self.scratch = scratch;
        }
        Ok(())
    }

    /// Slow path for diagnostic probes: copy out a node wanted by exact name.
    fn on_probe(&mut self, t: &mut sys::ggml_tensor, ask: bool) -> bool {
        let Some(i) = self
            .probes
            .iter()
            .position(|(name, _)| c_name_eq(name, &t.name))
        else {
            return false;
        };
        if ask {
            return true;
        }
        // SAFETY: `t` is live during the call.
        if t.type_ != sys::GGML_TYPE_F32 || !unsafe { sys::ggml_is_contiguous(t) } {
            self.error
                .get_or_insert(format!("probe {i}: not a contiguous f32 tensor"));
            return true;
        }
        let n = (t.ne[0] * t.ne[1] * t.ne[2] * t.ne[3]) as usize;
        let mut buf = vec![0f32; n];
        // SAFETY: contiguous f32 tensor of `n` elements; `buf` holds `n * 4` bytes.
        unsafe { sys::ggml_backend_tensor_get(t, buf.as_mut_ptr().cast::<c_void>(), 0, n * 4) };
        self.probes[i].1.extend_from_slice(&buf);
        true
    }

    #[inline]
    fn edit_and_capture(&mut self, layer: usize, want: u8, rows: &mut [f32]) {
        if want & WANT_EDIT != 0 {
            if self.rows.is_empty() {
                self.plan.apply_rows(layer, rows);
            } else {
                let n = rows.len() / self.hidden;
                let plans = if n == self.rows.len() {
                    &self.rows
                } else if n == self.out_rows.len() {
                    &self.out_rows
                } else {
                    self.error.get_or_insert(format!(
                        "layer {layer}: {n} rows, but the batch has {} tokens and {} outputs",
                        self.rows.len(),
                        self.out_rows.len()
                    ));
                    return;
                };
                for (row, plan) in rows.chunks_exact_mut(self.hidden).zip(plans) {
                    plan.apply_rows(layer, row);
                }
            }
        }
        if want & WANT_CAPTURE != 0 {
            self.captured[layer].extend_from_slice(rows);
        }
    }
}

/// The `cb_eval` trampoline. Never unwinds into C: a panic is caught and recorded, and the computation
/// goes on unedited; the context reports the error after `llama_decode` returns.
pub(crate) unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    if t.is_null() || user_data.is_null() {
        return false;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `user_data` is the `HookState` the context registered; it outlives the context and is
        // not otherwise accessed while `llama_decode` runs (the context holds `&mut self` during decode).
        let state = unsafe { &mut *user_data.cast::<HookState>() };
        // SAFETY: the scheduler passes a live node of the graph being computed.
        let tensor = unsafe { &mut *t };
        if state.trace && ask {
            trace_node(tensor);
        }
        let Some(layer) = state.wanted_layer(tensor) else {
            if state.probes.is_empty() {
                return false;
            }
            return state.on_probe(tensor, ask);
        };
        if ask {
            return true;
        }
        if let Err(e) = state.on_data(tensor, layer) {
            state.error.get_or_insert(e);
        }
        true
    }));
    match result {
        Ok(want) => want,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            // SAFETY: as above; the panic left no live borrow of the state.
            let state = unsafe { &mut *user_data.cast::<HookState>() };
            state
                .error
                .get_or_insert(format!("panic in the eval callback: {msg}"));
            // on the data call, returning true lets the graph finish; on ask, do not request the node
            !ask
        }
    }
}

fn trace_node(t: &sys::ggml_tensor) {
    use std::io::Write;
    let name: Vec<u8> = t
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    // SAFETY: `ggml_op_desc` returns a static string for any live tensor.
    let op = unsafe { std::ffi::CStr::from_ptr(sys::ggml_op_desc(t)) };
    let _ = writeln!(
        std::io::stderr(),
        "node {:<24} {:<12} [{}, {}, {}, {}]",
        String::from_utf8_lossy(&name),
        op.to_string_lossy(),
        t.ne[0],
        t.ne[1],
        t.ne[2],
        t.ne[3]
    );
}

/// Parse `<prefix>-<digits>\0` out of a node name without allocating.
#[inline]
fn layer_of(name: &[std::ffi::c_char; 64], prefix: &[u8]) -> Option<usize> {
    let p = prefix.len();
    if p + 2 > name.len() {
        return None;
    }
    for i in 0..p {
        if name[i] as u8 != prefix[i] {
            return None;
        }
    }
    if name[p] as u8 != b'-' {
        return None;
    }
    let mut layer = 0usize;
    let mut digits = 0;
    for &c in &name[p + 1..] {
        let c = c as u8;
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        layer = layer * 10 + (c - b'0') as usize;
        digits += 1;
        if digits > 6 {
            return None;
        }
    }
    (digits > 0).then_some(layer)
}

fn same_name(src: *mut sys::ggml_tensor, name: &[std::ffi::c_char; 64]) -> bool {
    if src.is_null() {
        return false;
    }
    // SAFETY: a non-null source of a live graph node is itself a live tensor.
    let s = unsafe { &*src };
    c_name_eq(&s.name, name)
}

/// Compare two node names as C strings: bytes after the first NUL are leftovers of earlier names
/// (llama.cpp renames nodes in place) and must be ignored.
#[inline]
fn c_name_eq(a: &[std::ffi::c_char; 64], b: &[std::ffi::c_char; 64]) -> bool {
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
        if x == 0 {
            return true;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> [std::ffi::c_char; 64] {
        let mut n = [0 as std::ffi::c_char; 64];
        for (i, b) in s.bytes().enumerate() {
            n[i] = b as std::ffi::c_char;
        }
        n
    }

    #[test]
    fn parses_layer_suffix() {
        assert_eq!(layer_of(&name("ffn_out-0"), b"ffn_out"), Some(0));
        assert_eq!(layer_of(&name("ffn_out-29"), b"ffn_out"), Some(29));
        assert_eq!(layer_of(&name("ffn_out"), b"ffn_out"), None);
        assert_eq!(layer_of(&name("ffn_out-"), b"ffn_out"), None);
        assert_eq!(layer_of(&name("ffn_out-3 (view)"), b"ffn_out"), None);
        assert_eq!(layer_of(&name("ffn_outx-3"), b"ffn_out"), None);
        assert_eq!(layer_of(&name("l_out-3"), b"ffn_out"), None);
        assert_eq!(
            layer_of(&name("ffn_post_norm-17"), b"ffn_post_norm"),
            Some(17)
        );
    }

    #[test]
    fn names_compare_as_c_strings() {
        let mut renamed = name("ffn_out-12");
        // llama.cpp renames in place: "l_out-12\0" over "ffn_out-12\0" leaves "2\0" behind
        for (i, b) in "l_out-12\0".bytes().enumerate() {
            renamed[i] = b as std::ffi::c_char;
        }
        assert!(c_name_eq(&renamed, &name("l_out-12")));
        assert!(!c_name_eq(&renamed, &name("l_out-1")));
        assert!(!c_name_eq(&name("ffn_out-1"), &name("ffn_out-12")));
    }

    #[test]
    fn arch_table() {
        assert_eq!(mlp_node("llama").name, "ffn_out");
        assert!(!mlp_node("qwen2").post_norm);
        assert_eq!(
            mlp_node("gemma3"),
            MlpNode {
                name: "ffn_post_norm",
                post_norm: true
            }
        );
    }
}
