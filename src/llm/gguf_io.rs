//! Reading weights from and writing adapters to GGUF files, through ggml's own GGUF code.

use std::ffi::{CString, c_void};
use std::path::Path;

use llama_cpp_sys_2 as sys;

use super::error::LlmError;

/// A dense f32 matrix read from a GGUF tensor: `rows x cols` row-major, where ggml's `ne = [cols, rows]`.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Rows (ggml `ne[1]`).
    pub rows: usize,
    /// Columns (ggml `ne[0]`).
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

fn cpath(path: &Path) -> Result<CString, LlmError> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| LlmError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// Read and dequantize the named 2-D tensors of a GGUF file (any type ggml can convert to f32).
///
/// # Errors
/// [`LlmError::InvalidGguf`] when the file cannot be parsed, [`LlmError::Callback`] naming a tensor that is
/// missing, not 2-D, or of a type without a dequantizer.
pub fn read_matrices(path: &Path, names: &[String]) -> Result<Vec<Matrix>, LlmError> {
    super::backend::init();
    let c = cpath(path)?;
    let mut ctx: *mut sys::ggml_context = std::ptr::null_mut();
    let params = sys::gguf_init_params {
        no_alloc: false,
        ctx: &mut ctx,
    };
    // SAFETY: valid path; `ctx` receives a ggml context that owns every tensor's data, freed below.
    let g = unsafe { sys::gguf_init_from_file(c.as_ptr(), params) };
    if g.is_null() || ctx.is_null() {
        return Err(LlmError::InvalidGguf {
            path: path.to_path_buf(),
        });
    }
    let result = names.iter().map(|name| read_one(ctx, name)).collect();
    // SAFETY: both were created above and are freed once; the matrices were copied out.
    unsafe {
        sys::ggml_free(ctx);
        sys::gguf_free(g);
    }
    result
}

fn read_one(ctx: *mut sys::ggml_context, name: &str) -> Result<Matrix, LlmError> {
    let cname =
        CString::new(name).map_err(|_| LlmError::Callback(format!("bad tensor name `{name}`")))?;
    // SAFETY: live context, NUL-terminated name; null when absent.
    let t = unsafe { sys::ggml_get_tensor(ctx, cname.as_ptr()) };
    if t.is_null() {
        return Err(LlmError::Callback(format!(
            "tensor `{name}` not found in the model file"
        )));
    }
    // SAFETY: a live tensor of the context, with its data loaded (`no_alloc: false`).
    let t = unsafe { &*t };
    if t.ne[2] != 1 || t.ne[3] != 1 {
        return Err(LlmError::Callback(format!("tensor `{name}` is not 2-D")));
    }
    let (cols, rows) = (t.ne[0] as usize, t.ne[1] as usize);
    let mut data = vec![0f32; rows * cols];
    if t.type_ == sys::GGML_TYPE_F32 {
        // SAFETY: an f32 tensor holds exactly rows*cols floats at `data`.
        data.copy_from_slice(unsafe {
            std::slice::from_raw_parts(t.data.cast::<f32>(), rows * cols)
        });
    } else {
        // SAFETY: type traits exist for every ggml type (a static table).
        let traits = unsafe { &*sys::ggml_get_type_traits(t.type_) };
        let Some(to_float) = traits.to_float else {
            return Err(LlmError::Callback(format!(
                "tensor `{name}` has a type ggml cannot dequantize"
            )));
        };
        let row_bytes = t.nb[1];
        for r in 0..rows {
            // SAFETY: row r starts `r * nb[1]` bytes into the tensor's data and holds `cols` values of
            // its type; the output slice has room for `cols` floats.
            unsafe {
                to_float(
                    t.data.cast::<u8>().add(r * row_bytes).cast::<c_void>(),
                    data[r * cols..].as_mut_ptr(),
                    cols as i64,
                );
            }
        }
    }
    Ok(Matrix { rows, cols, data })
}

/// Write a LoRA adapter GGUF that stock llama.cpp loads with `--lora`: `general.type = adapter`,
/// `adapter.type = lora`, `adapter.lora.alpha = alpha`, and one f32 tensor per entry of `tensors`
/// (`name`, matrix as `rows x cols`, written with ggml `ne = [cols, rows]`). Written to a temporary file and
/// renamed, so a crash never leaves a half-written adapter.
///
/// # Errors
/// [`LlmError::Io`] when the file cannot be written.
pub fn write_lora(
    path: &Path,
    arch: &str,
    alpha: f32,
    tensors: &[(String, Matrix)],
) -> Result<(), LlmError> {
    write_gguf(
        path,
        &[
            ("general.architecture", arch),
            ("general.type", "adapter"),
            ("adapter.type", "lora"),
            ("general.name", "chameleon profile"),
        ],
        &[("adapter.lora.alpha", alpha)],
        tensors,
    )
}

/// Write a control vector GGUF that stock llama.cpp loads with `--control-vector`: one 1-D f32 tensor
/// `direction.N` of `n_embd` values per steered layer N (N >= 1; llama.cpp adds it to the layer's
/// output), and `controlvector.model_hint` as llama.cpp's own `cvector-generator` writes it. Written to a
/// temporary file and renamed.
///
/// # Errors
/// [`LlmError::Io`] when the file cannot be written.
pub fn write_control_vector(
    path: &Path,
    model_hint: &str,
    directions: &[(usize, Vec<f32>)],
) -> Result<(), LlmError> {
    let tensors: Vec<(String, Matrix)> = directions
        .iter()
        .map(|(layer, v)| {
            (
                format!("direction.{layer}"),
                Matrix {
                    rows: 1,
                    cols: v.len(),
                    data: v.clone(),
                },
            )
        })
        .collect();
    write_gguf(
        path,
        &[
            ("general.architecture", "controlvector"),
            ("general.name", "chameleon profile"),
            ("controlvector.model_hint", model_hint),
        ],
        &[],
        &tensors,
    )
}

/// Write a GGUF file of string and f32 metadata and f32 tensors (`rows x cols`, ggml `ne = [cols,
/// rows]`; a single row is a 1-D tensor), through a temporary file and a rename.
fn write_gguf(
    path: &Path,
    strings: &[(&str, &str)],
    floats: &[(&str, f32)],
    tensors: &[(String, Matrix)],
) -> Result<(), LlmError> {
    super::backend::init();
    let io = |e: std::io::Error| LlmError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bytes: usize = tensors.iter().map(|(_, m)| m.data.len() * 4).sum();
    // SAFETY: a pure size query.
    let overhead = unsafe { sys::ggml_tensor_overhead() };
    let params = sys::ggml_init_params {
        mem_size: bytes + (tensors.len() + 4) * (overhead + 64),
        mem_buffer: std::ptr::null_mut(),
        no_alloc: false,
    };
    // SAFETY: ggml allocates `mem_size` bytes for the context, freed below.
    let ctx = unsafe { sys::ggml_init(params) };
    if ctx.is_null() {
        return Err(io(std::io::Error::other("ggml_init failed")));
    }
    // SAFETY: creates an empty GGUF context, freed below.
    let g = unsafe { sys::gguf_init_empty() };
    let kv = |k: &str, v: &str| {
        let (k, v) = (
            CString::new(k).expect("no NUL"),
            CString::new(v).expect("no NUL"),
        );
        // SAFETY: live GGUF context; strings are copied by gguf.
        unsafe { sys::gguf_set_val_str(g, k.as_ptr(), v.as_ptr()) };
    };
    for (k, v) in strings {
        kv(k, v);
    }
    for (k, v) in floats {
        let key = CString::new(*k).expect("no NUL");
        // SAFETY: live GGUF context; the key is copied by gguf.
        unsafe { sys::gguf_set_val_f32(g, key.as_ptr(), *v) };
    }
    for (name, m) in tensors {
        let cname = CString::new(name.as_str()).expect("tensor names have no NUL");
        // SAFETY: the context has room for every tensor (sized above); data is copied into the tensor's
        // `cols * rows` floats; gguf_add_tensor copies the tensor's metadata and keeps a pointer to its
        // data, which lives until `ggml_free` after writing.
        unsafe {
            let t = if m.rows == 1 {
                sys::ggml_new_tensor_1d(ctx, sys::GGML_TYPE_F32, m.cols as i64)
            } else {
                sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F32, m.cols as i64, m.rows as i64)
            };
            std::ptr::copy_nonoverlapping(m.data.as_ptr(), (*t).data.cast::<f32>(), m.data.len());
            sys::ggml_set_name(t, cname.as_ptr());
            sys::gguf_add_tensor(g, t);
        }
    }
    let tmp = path.with_extension("gguf.tmp");
    let ctmp = cpath(&tmp)?;
    // SAFETY: live GGUF context whose tensors' data is alive; valid path.
    let ok = unsafe { sys::gguf_write_to_file(g, ctmp.as_ptr(), false) };
    // SAFETY: freed once, after writing.
    unsafe {
        sys::gguf_free(g);
        sys::ggml_free(ctx);
    }
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(std::io::Error::other("gguf_write_to_file failed")));
    }
    std::fs::rename(&tmp, path).map_err(io)
}
