//! C ABI: see `include/spice-shim.h`, which documents every function; this file implements it
//! on top of [`Shim`].
//!
//! Rules kept by every exported function:
//! - no panic crosses the boundary: bodies run inside [`guard`] (`catch_unwind`);
//! - NULL pointers are checked; fd ownership is taken first, so that every error path closes
//!   the fds the caller handed over;
//! - errors go to the thread-local [`spice_shim_last_error`] and to the log.
#![deny(clippy::undocumented_unsafe_blocks)]

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use gstspicedmabuf::fourcc::DRM_FORMAT_MOD_LINEAR;
use gstspicedmabuf::{Plane, Rect, ScanoutInfo};

use spice_shim_core::log;
use spice_shim_core::proto::cursor::MAX_CURSOR_SIZE;
use spice_shim_core::proto::{CursorShape, InputEvent};
use spice_shim_core::shim::{Config, Shim, default_pipelines_dir};

/// Most planes a scanout can have (DRM's limit).
const MAX_PLANES: usize = 4;

thread_local! {
    /// Why the last call on this thread failed.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// Which of the host's callbacks this thread is running, if any.
    static IN_CALLBACK: Cell<Option<Callback>> = const { Cell::new(None) };
}

fn clear_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// Records and logs an error.
fn fail(msg: &str) {
    log::error(msg);
    set_error(msg);
}

/// The host's callbacks, for calls they must not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callback {
    Complete,
    Input,
}

/// Marks the current thread as running a host callback until dropped.
struct CallbackScope(Option<Callback>);

impl CallbackScope {
    fn enter(which: Callback) -> Self {
        Self(IN_CALLBACK.with(|c| c.replace(Some(which))))
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

fn in_callback() -> Option<Callback> {
    IN_CALLBACK.with(Cell::get)
}

/// Runs `body`, turning a panic into an error message and `fallback`.
fn guard<T>(what: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(&format!("{what}: internal error: {msg}"));
            fallback
        }
    }
}

/// The host's `opaque` pointer.
#[derive(Clone, Copy)]
struct HostPtr(*mut c_void);

// SAFETY: the shim never dereferences the pointer; it only passes it back to the host's own
// callbacks, on shim threads. The header documents that the callbacks run on shim threads, so
// the caller guarantees that using `opaque` from there is thread-safe.
unsafe impl Send for HostPtr {}
// SAFETY: as for `Send`: the pointer is only copied and handed back to the host.
unsafe impl Sync for HostPtr {}

impl HostPtr {
    /// The raw pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut c_void {
        self.0
    }
}

/// `SpiceShimAsyncComplete`.
pub type SpiceShimAsyncComplete = unsafe extern "C" fn(opaque: *mut c_void, cookie: u64);

/// `SpiceShimInputCallbacks`; every member may be NULL.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SpiceShimInputCallbacks {
    pub key: Option<unsafe extern "C" fn(opaque: *mut c_void, scancode: u32, down: c_int)>,
    pub pointer_position:
        Option<unsafe extern "C" fn(opaque: *mut c_void, x: u32, y: u32, buttons: u32)>,
    pub pointer_motion:
        Option<unsafe extern "C" fn(opaque: *mut c_void, dx: i32, dy: i32, buttons: u32)>,
    pub button:
        Option<unsafe extern "C" fn(opaque: *mut c_void, button: u32, down: c_int, buttons: u32)>,
}

struct InputTarget {
    cbs: SpiceShimInputCallbacks,
    opaque: HostPtr,
}

/// The object behind `SpiceShim *`.
pub struct SpiceShim {
    shim: Shim,
    /// Current input callbacks. Readers hold the lock while calling them, so replacing them
    /// waits until no old callback runs.
    inputs: Arc<RwLock<Option<InputTarget>>>,
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// Turns the `spice_shim_new` option string into a [`Config`].
fn parse_options(options: &str) -> Result<Config, String> {
    spice_shim_core::options::parse(options, default_pipelines)
}

/// `$SPICE_SHIM_PIPELINES`, else `share/spice-shim/pipelines` in the installation prefix of
/// the file holding this code (the shared library, or the program it was linked into
/// statically), else [`default_pipelines_dir`] (source tree, then `/usr/local/share`).
fn default_pipelines() -> PathBuf {
    if std::env::var_os("SPICE_SHIM_PIPELINES").is_some() {
        return default_pipelines_dir();
    }
    if let Some(dir) = installed_pipelines_dir() {
        return dir;
    }
    default_pipelines_dir()
}

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

unsafe extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

const F_GETFD: c_int = 1;

/// The file (shared library or executable) this code was loaded from.
fn this_object_file() -> Option<PathBuf> {
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let addr = this_object_file as fn() -> Option<PathBuf> as *const c_void;
    // SAFETY: `addr` is an address inside this object and `info` a valid, writable Dl_info;
    // dladdr only writes `info`.
    let found = unsafe { dladdr(addr, &mut info) } != 0;
    if found && !info.dli_fname.is_null() {
        // SAFETY: on success dli_fname points to a NUL-terminated path owned by the dynamic
        // loader, valid while the object stays loaded (it is copied at once).
        let name = unsafe { CStr::from_ptr(info.dli_fname) };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
        if path.is_absolute() {
            return Some(path);
        }
    }
    std::env::current_exe().ok()
}

fn installed_pipelines_dir() -> Option<PathBuf> {
    let file = this_object_file()?;
    installed_pipelines_near(&file)
}

/// `<ancestor>/share/spice-shim/pipelines` for the first three ancestors of `file`
/// (`PREFIX/lib/libspice_shim.so`, `PREFIX/lib/x86_64-linux-gnu/…`, `PREFIX/bin/qemu`).
fn installed_pipelines_near(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .take(3)
        .map(|a| a.join("share/spice-shim/pipelines"))
        .find(|d| d.is_dir())
}

// ---------------------------------------------------------------------------------------------
// fds
// ---------------------------------------------------------------------------------------------

/// Whether `fd` is an open file descriptor of this process.
fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no third argument and only reads the descriptor table; an unknown
    // fd number just fails with EBADF.
    fd >= 0 && unsafe { fcntl(fd, F_GETFD) } != -1
}

/// Takes ownership of the distinct open fds in `raw` (in order of first appearance; negative
/// entries skipped). Returns them, the index of each entry's fd in that list (`None` for
/// negative entries and fds that are not open), and the numbers that were not open.
fn own_fds(raw: &[RawFd]) -> (Vec<OwnedFd>, Vec<Option<usize>>, Vec<RawFd>) {
    let mut seen: Vec<(RawFd, Option<usize>)> = Vec::new();
    let mut owned = Vec::new();
    let mut not_open = Vec::new();
    let mut index = Vec::with_capacity(raw.len());
    for &fd in raw {
        if fd < 0 {
            index.push(None);
            continue;
        }
        if let Some(&(_, i)) = seen.iter().find(|(n, _)| *n == fd) {
            index.push(i);
            continue;
        }
        let i = if fd_is_open(fd) {
            // SAFETY: the caller transferred ownership of this open fd to us (header contract
            // of gl_scanout/gl_scanout2), and each distinct number is wrapped once.
            owned.push(unsafe { OwnedFd::from_raw_fd(fd) });
            Some(owned.len() - 1)
        } else {
            not_open.push(fd);
            None
        };
        seen.push((fd, i));
        index.push(i);
    }
    (owned, index, not_open)
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// One call of a [`SpiceShimInputCallbacks`] member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputCall {
    Key {
        scancode: u32,
        down: bool,
    },
    Position {
        x: u32,
        y: u32,
        buttons: u32,
    },
    Motion {
        dx: i32,
        dy: i32,
        buttons: u32,
    },
    Button {
        button: u32,
        down: bool,
        buttons: u32,
    },
}

/// The callback calls for one event from a client.
fn translate(ev: &InputEvent) -> Vec<InputCall> {
    let mut out = Vec::new();
    match ev {
        InputEvent::KeyDown(_) | InputEvent::KeyUp(_) | InputEvent::KeyScancode(_) => {
            out.extend(ev.key_strokes().into_iter().map(|k| InputCall::Key {
                scancode: k.scancode,
                down: k.down,
            }))
        }
        InputEvent::KeyModifiers(_) => {}
        InputEvent::MouseMotion { dx, dy, buttons } => out.push(InputCall::Motion {
            dx: *dx,
            dy: *dy,
            buttons: u32::from(*buttons),
        }),
        InputEvent::MousePosition { x, y, buttons, .. } => out.push(InputCall::Position {
            x: *x,
            y: *y,
            buttons: u32::from(*buttons),
        }),
        InputEvent::MousePress { button, buttons } => out.push(InputCall::Button {
            button: u32::from(*button),
            down: true,
            buttons: u32::from(*buttons),
        }),
        InputEvent::MouseRelease { button, buttons } => out.push(InputCall::Button {
            button: u32::from(*button),
            down: false,
            buttons: u32::from(*buttons),
        }),
    }
    out
}

fn deliver(target: &InputTarget, call: InputCall) {
    let o = target.opaque.get();
    let c = &target.cbs;
    // SAFETY (all four calls): the host registered these function pointers with this opaque
    // pointer through spice_shim_set_input_callbacks and, per the header, they may be called
    // on shim threads until the callbacks are replaced, which waits for this call (we hold the
    // read lock).
    match call {
        InputCall::Key { scancode, down } => {
            if let Some(f) = c.key {
                // SAFETY: see above.
                unsafe { f(o, scancode, c_int::from(down)) }
            }
        }
        InputCall::Position { x, y, buttons } => {
            if let Some(f) = c.pointer_position {
                // SAFETY: see above.
                unsafe { f(o, x, y, buttons) }
            }
        }
        InputCall::Motion { dx, dy, buttons } => {
            if let Some(f) = c.pointer_motion {
                // SAFETY: see above.
                unsafe { f(o, dx, dy, buttons) }
            }
        }
        InputCall::Button {
            button,
            down,
            buttons,
        } => {
            if let Some(f) = c.button {
                // SAFETY: see above.
                unsafe { f(o, button, c_int::from(down), buttons) }
            }
        }
    }
}

fn dispatch_input(inputs: &RwLock<Option<InputTarget>>, ev: &InputEvent) {
    let calls = translate(ev);
    if calls.is_empty() {
        return;
    }
    let current = inputs.read().unwrap_or_else(|p| p.into_inner());
    if let Some(target) = current.as_ref() {
        let _scope = CallbackScope::enter(Callback::Input);
        for call in calls {
            deliver(target, call);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exported functions
// ---------------------------------------------------------------------------------------------

/// Borrows the shim behind a C pointer.
///
/// # Safety
/// `shim` is NULL or a pointer returned by `spice_shim_new` and not yet freed.
unsafe fn shim_ref<'a>(shim: *mut SpiceShim) -> Option<&'a SpiceShim> {
    // SAFETY: per this function's contract the pointer is NULL or a live `Box<SpiceShim>`,
    // and the header forbids freeing it while other calls on it run.
    unsafe { shim.as_ref() }
}

/// Creates and starts a shim. See `spice_shim_new` in `spice-shim.h`.
///
/// # Safety
/// `options` is NULL or a NUL-terminated string. `cb` is a function that may be called with
/// `opaque` on a shim thread until `spice_shim_free` returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_new(
    options: *const c_char,
    cb: Option<SpiceShimAsyncComplete>,
    opaque: *mut c_void,
) -> *mut SpiceShim {
    clear_error();
    let opts = if options.is_null() {
        String::new()
    } else {
        // SAFETY: the caller passes a NUL-terminated string (header contract).
        match unsafe { CStr::from_ptr(options) }.to_str() {
            Ok(s) => s.to_owned(),
            Err(_) => {
                fail("spice_shim_new: the options are not valid UTF-8");
                return std::ptr::null_mut();
            }
        }
    };
    guard("spice_shim_new", std::ptr::null_mut(), move || {
        let Some(cb) = cb else {
            fail("spice_shim_new: the completion callback is NULL");
            return std::ptr::null_mut();
        };
        let config = match parse_options(&opts) {
            Ok(c) => c,
            Err(e) => {
                fail(&e);
                return std::ptr::null_mut();
            }
        };
        let opaque = HostPtr(opaque);
        let on_complete = Box::new(move |cookie: u64| {
            let _scope = CallbackScope::enter(Callback::Complete);
            // SAFETY: the host gave us `cb` and `opaque` for exactly this purpose; the header
            // says it is called on a shim thread, once per cookie.
            unsafe { cb(opaque.get(), cookie) }
        });
        let shim = match Shim::start(config, on_complete) {
            Ok(s) => s,
            Err(e) => {
                fail(&format!("spice_shim_new: {e}"));
                return std::ptr::null_mut();
            }
        };
        let inputs: Arc<RwLock<Option<InputTarget>>> = Arc::new(RwLock::new(None));
        let target = inputs.clone();
        shim.set_input_callback(Some(Arc::new(move |ev: &InputEvent| {
            dispatch_input(&target, ev)
        })));
        Box::into_raw(Box::new(SpiceShim { shim, inputs }))
    })
}

/// Why the last call on this thread failed, or NULL.
#[unsafe(no_mangle)]
pub extern "C" fn spice_shim_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
        .unwrap_or(std::ptr::null())
}

/// The TCP port listened on, or -1.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_get_port(shim: *mut SpiceShim) -> c_int {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_get_port: shim is NULL");
        return -1;
    };
    match s.shim.tcp_addr() {
        Some(a) => c_int::from(a.port()),
        None => {
            set_error("spice_shim_get_port: no TCP listener");
            -1
        }
    }
}

/// Installs a scanout built from already owned fds, or disables it on errors.
fn apply_scanout(s: &SpiceShim, what: &str, info: ScanoutInfo, fds: Vec<OwnedFd>) {
    if let Err(e) = s.shim.gl_scanout(Some(info), fds) {
        // Shim::gl_scanout logged it and disabled the scanout.
        set_error(&format!("{what} refused: {e}"));
    }
}

/// Refuses a scanout for a reason found here: logs, records, disables the scanout.
fn refuse_scanout(s: &SpiceShim, what: &str, why: &str) {
    fail(&format!("{what} refused: {why}; scanout disabled"));
    let _ = s.shim.gl_scanout(None, Vec::new());
}

/// Replaces the scanout with a single-plane linear buffer. Takes ownership of `fd`.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`; `fd` is -1 or an fd the caller
/// owns and hands over.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_gl_scanout(
    shim: *mut SpiceShim,
    fd: c_int,
    width: u32,
    height: u32,
    stride: u32,
    fourcc: u32,
    y_0_top: c_int,
) {
    clear_error();
    const WHAT: &str = "gl_scanout";
    let (mut fds, _, not_open) = own_fds(&[fd]);
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        drop(fds);
        set_error("spice_shim_gl_scanout: shim is NULL (fd closed)");
        return;
    };
    guard("spice_shim_gl_scanout", (), move || {
        if fd < 0 || width == 0 || height == 0 {
            drop(fds);
            let _ = s.shim.gl_scanout(None, Vec::new());
            return;
        }
        if !not_open.is_empty() {
            refuse_scanout(s, WHAT, &format!("fd {fd} is not open"));
            return;
        }
        let info = ScanoutInfo {
            width,
            height,
            fourcc,
            modifier: DRM_FORMAT_MOD_LINEAR,
            y0_top: y_0_top != 0,
            planes: vec![Plane {
                fd_index: 0,
                offset: 0,
                stride,
            }],
        };
        apply_scanout(s, WHAT, info, std::mem::take(&mut fds));
    })
}

/// Replaces the scanout with a (multi-planar) buffer. Takes ownership of every fd.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`. If `num_planes > 0`, `fds` is NULL
/// or points to `num_planes` ints (fds the caller hands over, or -1), and `offsets` and
/// `strides` are NULL or point to `num_planes` values each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_gl_scanout2(
    shim: *mut SpiceShim,
    fds: *const c_int,
    width: u32,
    height: u32,
    offsets: *const u32,
    strides: *const u32,
    num_planes: u32,
    fourcc: u32,
    modifier: u64,
    y_0_top: c_int,
) {
    clear_error();
    const WHAT: &str = "gl_scanout2";
    let n = num_planes as usize;
    // More planes than any format has: the count is not believable, so none of the arrays is
    // read (their real length is unknown) and no fd is taken.
    let raw: Vec<RawFd> = if fds.is_null() || n == 0 || n > MAX_PLANES {
        Vec::new()
    } else {
        // SAFETY: per the contract `fds` points to `num_planes` ints, and that count is at
        // most MAX_PLANES.
        unsafe { std::slice::from_raw_parts(fds, n) }.to_vec()
    };
    let (owned, index, not_open) = own_fds(&raw);
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        drop(owned);
        set_error("spice_shim_gl_scanout2: shim is NULL (fds closed)");
        return;
    };
    let read = |p: *const u32| -> Option<Vec<u32>> {
        if p.is_null() || n == 0 || n > MAX_PLANES {
            None
        } else {
            // SAFETY: per the contract a non-NULL `offsets`/`strides` points to `num_planes`
            // values, and `n` is that count.
            Some(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
        }
    };
    let offsets = read(offsets);
    let strides = read(strides);
    guard("spice_shim_gl_scanout2", (), move || {
        if n == 0 || width == 0 || height == 0 || raw.first().is_some_and(|&fd| fd < 0) {
            drop(owned);
            let _ = s.shim.gl_scanout(None, Vec::new());
            return;
        }
        if n > MAX_PLANES {
            drop(owned);
            refuse_scanout(
                s,
                WHAT,
                &format!(
                    "{n} planes (1 to {MAX_PLANES} supported; the arrays were not read and the fds not taken)"
                ),
            );
            return;
        }
        if raw.is_empty() {
            refuse_scanout(s, WHAT, &format!("fds is NULL with {n} plane(s)"));
            return;
        }
        let (Some(offsets), Some(strides)) = (offsets, strides) else {
            drop(owned);
            refuse_scanout(s, WHAT, "offsets or strides is NULL");
            return;
        };
        if let Some(&fd) = not_open.first() {
            drop(owned);
            refuse_scanout(s, WHAT, &format!("fd {fd} is not open"));
            return;
        }
        let mut planes = Vec::with_capacity(n);
        for (i, fd_index) in index.iter().enumerate() {
            let Some(fd_index) = *fd_index else {
                drop(owned);
                refuse_scanout(s, WHAT, &format!("plane {i} has no fd ({})", raw[i]));
                return;
            };
            planes.push(Plane {
                fd_index,
                offset: offsets[i],
                stride: strides[i],
            });
        }
        let info = ScanoutInfo {
            width,
            height,
            fourcc,
            modifier,
            y0_top: y_0_top != 0,
            planes,
        };
        apply_scanout(s, WHAT, info, owned);
    })
}

/// Announces a changed rectangle; the cookie comes back through the completion callback.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_gl_draw_async(
    shim: *mut SpiceShim,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
    cookie: u64,
) {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_gl_draw_async: shim is NULL (the cookie will not come back)");
        return;
    };
    guard("spice_shim_gl_draw_async", (), || {
        s.shim.gl_draw(Rect { x, y, w, h }, cookie)
    })
}

/// Sets (or clears, with NULL) the input callbacks.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`; `cbs` is NULL or points to a
/// `SpiceShimInputCallbacks`; the callbacks may be called with `opaque` on shim threads until
/// they are replaced or the shim is freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_set_input_callbacks(
    shim: *mut SpiceShim,
    cbs: *const SpiceShimInputCallbacks,
    opaque: *mut c_void,
) {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_set_input_callbacks: shim is NULL");
        return;
    };
    // SAFETY: the caller passes NULL or a valid SpiceShimInputCallbacks, which is plain data
    // (nullable function pointers) and is copied here.
    let cbs = unsafe { cbs.as_ref() }.copied();
    if in_callback() == Some(Callback::Input) {
        fail(
            "spice_shim_set_input_callbacks: called from an input callback, which it would wait \
             for; refused",
        );
        return;
    }
    guard("spice_shim_set_input_callbacks", (), || {
        let mut cur = s.inputs.write().unwrap_or_else(|p| p.into_inner());
        *cur = cbs.map(|cbs| InputTarget {
            cbs,
            opaque: HostPtr(opaque),
        });
    })
}

/// See `spice_shim_set_absolute_pointer` in the header.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_set_absolute_pointer(shim: *mut SpiceShim, absolute: c_int) {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_set_absolute_pointer: shim is NULL");
        return;
    };
    guard("spice_shim_set_absolute_pointer", (), || {
        s.shim.set_client_mouse_available(absolute != 0)
    })
}

/// See `spice_shim_cursor_define` in the header.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`; `argb` is NULL or points to
/// `width * height` readable `uint32_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_cursor_define(
    shim: *mut SpiceShim,
    width: u32,
    height: u32,
    hot_x: u32,
    hot_y: u32,
    argb: *const u32,
) -> c_int {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_cursor_define: shim is NULL");
        return -1;
    };
    if argb.is_null() {
        fail("spice_shim_cursor_define: argb is NULL");
        return -1;
    }
    let max = MAX_CURSOR_SIZE;
    if width == 0 || height == 0 || width > max || height > max {
        fail(&format!(
            "spice_shim_cursor_define: {width}x{height} refused (1x1 to {max}x{max})"
        ));
        return -1;
    }
    // SAFETY: per the contract `argb` points to width * height pixels; both are at most 512,
    // checked above, so the count is what the caller promised and cannot overflow.
    let pixels = unsafe { std::slice::from_raw_parts(argb, (width * height) as usize) }.to_vec();
    guard(
        "spice_shim_cursor_define",
        -1,
        move || match CursorShape::new(width, height, hot_x, hot_y, pixels) {
            Ok(shape) => {
                s.shim.cursor_define(shape);
                0
            }
            Err(e) => {
                fail(&format!("spice_shim_cursor_define: {e}"));
                -1
            }
        },
    )
}

/// See `spice_shim_mouse_set` in the header.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_mouse_set(
    shim: *mut SpiceShim,
    x: i32,
    y: i32,
    visible: c_int,
) {
    clear_error();
    // SAFETY: the caller passes NULL or a live shim.
    let Some(s) = (unsafe { shim_ref(shim) }) else {
        set_error("spice_shim_mouse_set: shim is NULL");
        return;
    };
    guard("spice_shim_mouse_set", (), || {
        s.shim.mouse_set(x, y, visible != 0)
    })
}

/// Shuts the shim down (every pending cookie delivered) and frees it. NULL is a no-op.
///
/// # Safety
/// `shim` is NULL or a live pointer from `spice_shim_new`, not used by any other call during
/// or after this one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spice_shim_free(shim: *mut SpiceShim) {
    clear_error();
    if shim.is_null() {
        return;
    }
    if in_callback().is_some() {
        fail(
            "spice_shim_free: called from a shim callback, which it would wait for; refused \
             (the shim keeps running)",
        );
        return;
    }
    // SAFETY: `shim` came from Box::into_raw in spice_shim_new and is freed only here, once.
    let boxed = unsafe { Box::from_raw(shim) };
    guard("spice_shim_free", (), move || {
        let SpiceShim { shim, inputs } = *boxed;
        let stats = shim.shutdown();
        log::info(&format!("shim freed: {}", stats.to_string().trim_end()));
        drop(inputs);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstspicedmabuf::fourcc::DRM_FORMAT_MOD_INVALID;
    use spice_shim_core::proto::VideoCodec;

    #[test]
    fn options_defaults() {
        let c = parse_options("").unwrap();
        assert_eq!(c.tcp.as_deref(), Some("127.0.0.1:5930"));
        assert_eq!(c.unix, None);
        assert_eq!(
            c.codecs,
            [VideoCodec::H264, VideoCodec::Vp8, VideoCodec::Mjpeg]
        );
        assert_eq!(c.password, None);
    }

    #[test]
    fn options_values() {
        let c = parse_options("addr=0.0.0.0,port=0,video-codecs=vp8:h264,pipelines=/p,,q").unwrap();
        assert_eq!(c.tcp.as_deref(), Some("0.0.0.0:0"));
        assert_eq!(c.codecs, [VideoCodec::Vp8, VideoCodec::H264]);
        assert_eq!(c.pipelines_dir, PathBuf::from("/p,q"));
        assert_eq!(
            parse_options("addr=::1,port=7").unwrap().tcp.as_deref(),
            Some("[::1]:7")
        );
        assert_eq!(
            parse_options("video-codecs=gstreamer:h264;spice:mjpeg")
                .unwrap()
                .codecs,
            [VideoCodec::H264, VideoCodec::Mjpeg]
        );
        assert_eq!(
            parse_options("video-codec=vp9").unwrap().codecs,
            [VideoCodec::Vp9]
        );
        let c = parse_options("mm-latency=40,gl-draw-timeout=250").unwrap();
        assert_eq!(c.mm_latency_ms, Some(40));
        assert_eq!(c.gl_done_timeout, std::time::Duration::from_millis(250));
        assert_eq!(
            parse_options("mm-latency=0").unwrap_err(),
            "bad value for mm-latency: '0' (expected milliseconds, 1..10000 or auto)"
        );
        // unix only, unix + tcp, QEMU's unix=on,addr=PATH.
        let c = parse_options("unix=/tmp/s").unwrap();
        assert_eq!((c.tcp, c.unix), (None, Some(PathBuf::from("/tmp/s"))));
        let c = parse_options("unix=/tmp/s,port=0").unwrap();
        assert_eq!(c.tcp.as_deref(), Some("127.0.0.1:0"));
        let c = parse_options("unix=on,addr=/tmp/q").unwrap();
        assert_eq!((c.tcp, c.unix), (None, Some(PathBuf::from("/tmp/q"))));
        assert!(
            parse_options("disable-ticketing")
                .unwrap()
                .password
                .is_none()
        );
        assert!(
            parse_options("disable-ticketing=on")
                .unwrap()
                .password
                .is_none()
        );
    }

    #[test]
    fn options_errors() {
        let err = |s: &str| parse_options(s).unwrap_err();
        assert_eq!(err("foo=1"), "unknown option 'foo'");
        assert_eq!(
            err("port=abc"),
            "bad value for port: 'abc' (expected 0..65535)"
        );
        assert_eq!(
            err("port=70000"),
            "bad value for port: '70000' (expected 0..65535)"
        );
        assert_eq!(err("port"), "option 'port' needs a value (port=...)");
        assert_eq!(err("addr="), "option 'addr' needs a value (addr=...)");
        assert!(err("video-codecs=h263").starts_with("bad value for video-codecs: 'h263'"));
        assert!(err("video-codecs=:").starts_with("bad value for video-codecs: ':' (no codec)"));
        assert_eq!(
            err("disable-ticketing=maybe"),
            "bad value for disable-ticketing: 'maybe' (expected on or off)"
        );
        assert_eq!(err("unix=on"), "unix=on needs addr=PATH (the socket path)");
        assert!(err("unix=on,addr=/x,port=1").starts_with("port= cannot be combined"));
        assert!(err("password-secret=SPICE_SHIM_TEST_SURELY_UNSET_VAR").contains("is not set"),);
        assert!(err("password-file=/nonexistent/pw").starts_with("cannot read password-file"));
    }

    #[test]
    fn options_passwords() {
        let dir = std::env::temp_dir().join(format!("capi-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\r\nsecond line\n").unwrap();
        let c = parse_options(&format!("password-file={}", file.display())).unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(
            parse_options(&format!(
                "password-file={},disable-ticketing=on",
                file.display()
            ))
            .unwrap_err()
            .contains("cannot be combined")
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(
            parse_options(&format!("password-file={}", file.display()))
                .unwrap_err()
                .contains("is empty")
        );
        // QEMU's way to pass a secret without a file on disk: a memfd.
        let mfd = rustix::fs::memfd_create("pw", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&mfd, b"from-memfd\n").unwrap();
        let c = parse_options(&format!(
            "password-file=/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&mfd)
        ))
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("from-memfd"));
        // PATH is always set, and is not empty.
        let path = std::env::var("PATH").unwrap();
        let c = parse_options("password-secret=PATH").unwrap();
        assert_eq!(c.password, Some(path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn installed_pipelines_are_found_next_to_the_library() {
        let dir = std::env::temp_dir().join(format!("capi-prefix-{}", std::process::id()));
        let pipelines = dir.join("share/spice-shim/pipelines");
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::create_dir_all(dir.join("lib/x86_64-linux-gnu")).unwrap();
        assert_eq!(
            installed_pipelines_near(&dir.join("lib/libspice_shim.so")),
            Some(pipelines.clone())
        );
        assert_eq!(
            installed_pipelines_near(&dir.join("lib/x86_64-linux-gnu/libspice_shim.so")),
            Some(pipelines.clone())
        );
        assert_eq!(
            installed_pipelines_near(&dir.join("bin/qemu-system-x86_64")),
            Some(pipelines)
        );
        assert_eq!(
            installed_pipelines_near(Path::new("/nonexistent/lib/x.so")),
            None
        );
        assert!(this_object_file().is_some_and(|p| p.is_absolute()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_decode_like_a_keyboard_controller() {
        let keys = |ev: InputEvent| {
            translate(&ev)
                .into_iter()
                .map(|c| match c {
                    InputCall::Key { scancode, down } => (scancode, down),
                    other => panic!("not a key: {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(InputEvent::KeyDown(0x1E)), [(0x1E, true)]);
        assert_eq!(keys(InputEvent::KeyUp(0x9E)), [(0x1E, false)]);
        // Extended keys: 0xE0 | code << 8 on the wire.
        assert_eq!(
            keys(InputEvent::KeyDown(0xE0 | 0x48 << 8)),
            [(0xE048, true)]
        );
        assert_eq!(keys(InputEvent::KeyUp(0xE0 | 0xC8 << 8)), [(0xE048, false)]);
        // KEY_SCANCODE: press + release in one message, Pause.
        assert_eq!(
            keys(InputEvent::KeyScancode(vec![
                0x1E, 0x9E, 0xE0, 0x1D, 0xE0, 0x9D
            ])),
            [(0x1E, true), (0x1E, false), (0xE01D, true), (0xE01D, false)]
        );
        assert_eq!(
            keys(InputEvent::KeyScancode(vec![
                0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5
            ])),
            [(0xE11D45, true), (0xE11D45, false)]
        );
        // A dangling prefix is dropped; modifiers are not forwarded.
        assert_eq!(
            keys(InputEvent::KeyScancode(vec![0x10, 0xE0])),
            [(0x10, true)]
        );
        assert!(keys(InputEvent::KeyModifiers(4)).is_empty());
    }

    #[test]
    fn mouse_events_map_to_callbacks() {
        assert_eq!(
            translate(&InputEvent::MouseMotion {
                dx: -3,
                dy: 4,
                buttons: 1
            }),
            [InputCall::Motion {
                dx: -3,
                dy: 4,
                buttons: 1
            }]
        );
        assert_eq!(
            translate(&InputEvent::MousePosition {
                x: 10,
                y: 20,
                buttons: 4,
                display_id: 0
            }),
            [InputCall::Position {
                x: 10,
                y: 20,
                buttons: 4
            }]
        );
        assert_eq!(
            translate(&InputEvent::MousePress {
                button: 3,
                buttons: 4
            }),
            [InputCall::Button {
                button: 3,
                down: true,
                buttons: 4
            }]
        );
        assert_eq!(
            translate(&InputEvent::MouseRelease {
                button: 3,
                buttons: 0
            }),
            [InputCall::Button {
                button: 3,
                down: false,
                buttons: 0
            }]
        );
    }

    // ----- through the exported functions -----

    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Record {
        cookies: Mutex<Vec<u64>>,
        inputs: Mutex<Vec<String>>,
    }

    unsafe extern "C" fn on_complete(opaque: *mut c_void, cookie: u64) {
        // SAFETY: the tests pass a pointer to a Record that outlives the shim.
        let r = unsafe { &*(opaque as *const Record) };
        r.cookies.lock().unwrap().push(cookie);
    }

    unsafe extern "C" fn on_key(opaque: *mut c_void, scancode: u32, down: c_int) {
        // SAFETY: as in on_complete.
        let r = unsafe { &*(opaque as *const Record) };
        r.inputs
            .lock()
            .unwrap()
            .push(format!("key {scancode:#x} {down}"));
    }

    unsafe extern "C" fn on_button(opaque: *mut c_void, button: u32, down: c_int, buttons: u32) {
        // SAFETY: as in on_complete.
        let r = unsafe { &*(opaque as *const Record) };
        r.inputs
            .lock()
            .unwrap()
            .push(format!("button {button} {down} {buttons}"));
    }

    fn last_error() -> Option<String> {
        let p = spice_shim_last_error();
        // SAFETY: non-NULL results are NUL-terminated strings valid until the next call.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// A memfd with a unique name, so [`still_open`] is not fooled by a reused number.
    fn memfd(size: u64) -> RawFd {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!("capi-test-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let fd = rustix::fs::memfd_create(
            name,
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
        std::os::fd::IntoRawFd::into_raw_fd(fd)
    }

    /// Whether `fd` is still the memfd [`memfd`] returned (tests run in parallel, so a closed
    /// number may already be reused by another test).
    fn still_open(fd: RawFd, name_of: &str) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|l| l.to_string_lossy() == name_of)
    }

    fn link(fd: RawFd) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn pipelines() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines").to_owned()
    }

    fn wait_for(rec: &Record, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rec.cookies.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "cookies did not come back");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    const XR24: u32 = u32::from_le_bytes(*b"XR24");

    #[test]
    fn null_handling_and_errors() {
        // SAFETY: NULL and valid strings only.
        unsafe {
            let opts = CString::new("foo=1").unwrap();
            assert!(
                spice_shim_new(opts.as_ptr(), Some(on_complete), std::ptr::null_mut()).is_null()
            );
            assert_eq!(last_error().as_deref(), Some("unknown option 'foo'"));
            // The message is per thread.
            std::thread::spawn(|| assert_eq!(last_error(), None))
                .join()
                .unwrap();
            assert!(spice_shim_new(std::ptr::null(), None, std::ptr::null_mut()).is_null());
            assert!(last_error().unwrap().contains("callback is NULL"));
            assert_eq!(spice_shim_get_port(std::ptr::null_mut()), -1);
            spice_shim_free(std::ptr::null_mut());
            assert_eq!(last_error(), None);
            spice_shim_gl_draw_async(std::ptr::null_mut(), 0, 0, 1, 1, 1);
            spice_shim_set_input_callbacks(
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
            );
            // A NULL shim still takes the fds.
            let fd = memfd(4096);
            let name = link(fd);
            spice_shim_gl_scanout(std::ptr::null_mut(), fd, 16, 16, 64, XR24, 1);
            assert!(!still_open(fd, &name));
            let fd = memfd(4096);
            let name = link(fd);
            spice_shim_gl_scanout2(
                std::ptr::null_mut(),
                [fd, fd].as_ptr(),
                16,
                16,
                [0, 0].as_ptr(),
                [64, 64].as_ptr(),
                2,
                XR24,
                0,
                1,
            );
            assert!(!still_open(fd, &name));
        }
    }

    struct Reentrant {
        shim: std::sync::atomic::AtomicPtr<SpiceShim>,
        errors: Mutex<Vec<String>>,
    }

    unsafe extern "C" fn free_from_complete(opaque: *mut c_void, _cookie: u64) {
        // SAFETY: the test passes a Reentrant that outlives the shim.
        let r = unsafe { &*(opaque as *const Reentrant) };
        let shim = r.shim.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: a live shim; the call must be refused.
        unsafe { spice_shim_free(shim) };
        r.errors
            .lock()
            .unwrap()
            .push(last_error().unwrap_or_default());
    }

    unsafe extern "C" fn calls_from_key(opaque: *mut c_void, _scancode: u32, _down: c_int) {
        // SAFETY: as in free_from_complete.
        let r = unsafe { &*(opaque as *const Reentrant) };
        let shim = r.shim.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: a live shim; both calls must be refused.
        unsafe { spice_shim_set_input_callbacks(shim, std::ptr::null(), std::ptr::null_mut()) };
        r.errors
            .lock()
            .unwrap()
            .push(last_error().unwrap_or_default());
        // SAFETY: as above.
        unsafe { spice_shim_free(shim) };
        r.errors
            .lock()
            .unwrap()
            .push(last_error().unwrap_or_default());
    }

    #[test]
    fn callbacks_cannot_free_the_shim_or_wait_for_themselves() {
        let r = Box::new(Reentrant {
            shim: Default::default(),
            errors: Mutex::default(),
        });
        let opaque = &*r as *const Reentrant as *mut c_void;
        let opts = CString::new(format!(
            "port=0,video-codecs=mjpeg,pipelines={}",
            pipelines()
        ))
        .unwrap();
        // SAFETY: valid options, callbacks and a Reentrant that outlives the shim.
        unsafe {
            let shim = spice_shim_new(opts.as_ptr(), Some(free_from_complete), opaque);
            assert!(!shim.is_null(), "{:?}", last_error());
            r.shim.store(shim, std::sync::atomic::Ordering::SeqCst);
            spice_shim_gl_draw_async(shim, 0, 0, 1, 1, 1);
            let deadline = Instant::now() + Duration::from_secs(10);
            while r.errors.lock().unwrap().is_empty() {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(5));
            }
            let cbs = SpiceShimInputCallbacks {
                key: Some(calls_from_key),
                ..Default::default()
            };
            spice_shim_set_input_callbacks(shim, &cbs, opaque);
            dispatch_input(&(*shim).inputs, &InputEvent::KeyDown(0x1E));
            // Still alive and usable.
            assert!(spice_shim_get_port(shim) > 0);
            spice_shim_free(shim);
        }
        let errors = r.errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("spice_shim_free: called from a shim callback"));
        assert!(errors[1].starts_with("spice_shim_set_input_callbacks: called from an input"));
        assert!(errors[2].starts_with("spice_shim_free: called from a shim callback"));
    }

    #[test]
    fn scanouts_draws_and_free() {
        let rec = Box::new(Record::default());
        let opaque = &*rec as *const Record as *mut c_void;
        let opts = CString::new(format!(
            "port=0,video-codecs=mjpeg,pipelines={}",
            pipelines()
        ))
        .unwrap();
        // SAFETY: valid options, callbacks and a Record that outlives the shim.
        unsafe {
            let shim = spice_shim_new(opts.as_ptr(), Some(on_complete), opaque);
            assert!(!shim.is_null(), "{:?}", last_error());
            assert!(spice_shim_get_port(shim) > 0);

            // No scanout: the draw completes at once.
            spice_shim_gl_draw_async(shim, 0, 0, 8, 8, 1);
            wait_for(&rec, 1);

            // A good scanout, then one that is too small: refused, fd closed, draws complete.
            spice_shim_gl_scanout(shim, memfd(64 * 16), 16, 16, 64, XR24, 1);
            assert_eq!(last_error(), None);
            spice_shim_gl_draw_async(shim, 0, 0, 16, 16, 2);
            let small = memfd(100);
            spice_shim_gl_scanout(shim, small, 16, 16, 64, XR24, 1);
            assert!(
                last_error()
                    .unwrap()
                    .starts_with("gl_scanout refused: plane 0: fd is 100 bytes")
            );
            spice_shim_gl_draw_async(shim, 0, 0, 16, 16, 3);
            wait_for(&rec, 3);

            // scanout2: NV12 with both planes in one fd, given twice.
            let fd = memfd(16 * 16 * 3 / 2);
            let name = link(fd);
            spice_shim_gl_scanout2(
                shim,
                [fd, fd].as_ptr(),
                16,
                16,
                [0, 256].as_ptr(),
                [16, 16].as_ptr(),
                2,
                u32::from_le_bytes(*b"NV12"),
                DRM_FORMAT_MOD_INVALID,
                1,
            );
            assert_eq!(last_error(), None);
            assert!(still_open(fd, &name));
            // Tiled: refused in one line, the fd closed at once.
            let tiled = memfd(64 * 16);
            let name = link(tiled);
            spice_shim_gl_scanout2(
                shim,
                [tiled].as_ptr(),
                16,
                16,
                [0].as_ptr(),
                [64].as_ptr(),
                1,
                XR24,
                0x0100_0000_0000_0001,
                1,
            );
            assert!(
                last_error()
                    .unwrap()
                    .contains("0x0100000000000001 is not linear")
            );
            assert!(!still_open(tiled, &name));
            spice_shim_gl_draw_async(shim, 0, 0, 16, 16, 4);
            wait_for(&rec, 4);
            // Five planes: refused without reading the arrays, so no fd is taken (the caller's
            // arrays may be shorter than what it claims).
            let five: Vec<RawFd> = (0..5).map(|_| memfd(4096)).collect();
            let names: Vec<String> = five.iter().map(|&fd| link(fd)).collect();
            spice_shim_gl_scanout2(
                shim,
                five.as_ptr(),
                16,
                16,
                [0; 5].as_ptr(),
                [64; 5].as_ptr(),
                5,
                XR24,
                0,
                1,
            );
            assert!(last_error().unwrap().contains("5 planes"));
            assert!(five.iter().zip(&names).all(|(&fd, n)| still_open(fd, n)));
            for fd in five {
                drop(OwnedFd::from_raw_fd(fd));
            }
            // UINT32_MAX planes with one-element arrays: nothing is read past them (reading
            // 2^32 entries would crash), the scanout is refused and later draws complete.
            let one = memfd(4096);
            let one_name = link(one);
            spice_shim_gl_scanout2(
                shim,
                [one].as_ptr(),
                16,
                16,
                [0u32].as_ptr(),
                [64u32].as_ptr(),
                u32::MAX,
                XR24,
                0,
                1,
            );
            assert!(last_error().unwrap().contains("4294967295 planes"));
            assert!(still_open(one, &one_name));
            drop(OwnedFd::from_raw_fd(one));
            spice_shim_gl_draw_async(shim, 0, 0, 16, 16, 100);
            wait_for(&rec, 5);
            // Disabled with NULL arrays (QEMU's scanout2 disable).
            spice_shim_gl_scanout2(
                shim,
                std::ptr::null(),
                0,
                0,
                std::ptr::null(),
                std::ptr::null(),
                0,
                0,
                DRM_FORMAT_MOD_INVALID,
                0,
            );
            assert_eq!(last_error(), None);

            // Input callbacks reach the host through the shim's input hook.
            let cbs = SpiceShimInputCallbacks {
                key: Some(on_key),
                button: Some(on_button),
                ..Default::default()
            };
            spice_shim_set_input_callbacks(shim, &cbs, opaque);
            let hook = |ev: &InputEvent| dispatch_input(&(*shim).inputs, ev);
            hook(&InputEvent::KeyDown(0xE0 | 0x48 << 8));
            hook(&InputEvent::MousePress {
                button: 1,
                buttons: 1,
            });
            hook(&InputEvent::MouseMotion {
                dx: 1,
                dy: 1,
                buttons: 1,
            });
            spice_shim_set_input_callbacks(shim, std::ptr::null(), std::ptr::null_mut());
            hook(&InputEvent::KeyUp(0x9E));
            assert_eq!(
                *rec.inputs.lock().unwrap(),
                ["key 0xe048 1", "button 1 1 1"]
            );

            spice_shim_gl_scanout(shim, memfd(64 * 16), 16, 16, 64, XR24, 1);
            for c in 5..20 {
                spice_shim_gl_draw_async(shim, 0, 0, 16, 16, c);
            }
            spice_shim_free(shim);
        }
        let mut got = rec.cookies.lock().unwrap().clone();
        got.sort_unstable();
        let mut want: Vec<u64> = (1..20).collect();
        want.push(100);
        assert_eq!(got, want);
    }
}
