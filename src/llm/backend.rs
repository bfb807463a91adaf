//! Process-wide llama.cpp state: backend initialisation and the log sink.

use std::ffi::{CStr, c_char, c_void};
use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_sys_2 as sys;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static INIT: Once = Once::new();

/// Show (true) or silence (false, the default) llama.cpp's own log output on stderr.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    init();
}

/// Initialise llama.cpp once per process. Every entry point that touches the C API calls this first.
pub(crate) fn init() {
    INIT.call_once(|| {
        // SAFETY: `log_sink` is a plain `extern "C"` function valid for the whole process and ignores
        // its user data (null); `llama_backend_init` has no preconditions and runs once (`Once`).
        unsafe {
            sys::llama_log_set(Some(log_sink), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

/// Log callback: forwards llama.cpp's messages to stderr when verbose. It never panics (a failed
/// write to stderr is ignored).
unsafe extern "C" fn log_sink(
    _level: sys::ggml_log_level,
    text: *const c_char,
    _user: *mut c_void,
) {
    if !VERBOSE.load(Ordering::Relaxed) || text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for the duration of the call.
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    let _ = std::io::stderr().write_all(bytes);
}

/// One compute device llama.cpp was built with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    /// llama.cpp's name for it (`CPU`, `CUDA0`, `Metal`, `Vulkan0`, ...).
    pub name: String,
    /// What the driver calls it (the CPU model, the GPU's product name).
    pub description: String,
    /// Whether it is the host CPU (edits there touch the tensor in place; elsewhere they are copied).
    pub cpu: bool,
}

/// The devices of this build, CPU included, in llama.cpp's order.
pub fn devices() -> Vec<Device> {
    init();
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: ggml returns NUL-terminated strings owned by the device, alive for the process.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: the backend registry is initialised (`init`); every index below the count is valid
    // and the getters only read the device's static description.
    unsafe {
        (0..sys::ggml_backend_dev_count())
            .map(|i| {
                let dev = sys::ggml_backend_dev_get(i);
                Device {
                    name: text(sys::ggml_backend_dev_name(dev)),
                    description: text(sys::ggml_backend_dev_description(dev)),
                    cpu: sys::ggml_backend_dev_type(dev) == sys::GGML_BACKEND_DEVICE_TYPE_CPU,
                }
            })
            .collect()
    }
}

/// Whether this build can offload layers to a GPU (`--gpu-layers`).
pub fn gpu_offload() -> bool {
    init();
    // SAFETY: no preconditions beyond the initialised backend.
    unsafe { sys::llama_supports_gpu_offload() }
}
