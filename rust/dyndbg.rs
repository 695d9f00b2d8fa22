// SPDX-License-Identifier: GPL-2.0

//! Dynamic-debug callsites (`srctree/include/linux/dynamic_debug.h`).
//!
//! The 6.12 `pr_debug!` is compiled in only with
//! `CONFIG_RUST_DEBUG_ASSERTIONS`. [`dyn_debug!`] builds what C's `pr_debug`
//! builds under `CONFIG_DYNAMIC_DEBUG`: one `struct _ddebug` per callsite in
//! the `__dyndbg` section, which the module loader hands to dynamic debug.
//! Every callsite is off until switched on at run time, e.g.
//!
//! ```text
//! echo 'module vfio_mig_sample +p' > /proc/dynamic_debug/control
//! ```
//!
//! Without `CONFIG_DYNAMIC_DEBUG` the macro only type-checks its arguments.

#![cfg_attr(not(CONFIG_DYNAMIC_DEBUG), allow(unused_imports))]

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::bindings;
use kernel::c_str;
use kernel::ffi::c_char;
use kernel::prelude::*;

#[cfg(CONFIG_DYNAMIC_DEBUG)]
/// `_DPRINTK_FLAGS_PRINT`: the callsite prints.
const FLAG_PRINT: u32 = 1 << 0;
#[cfg(CONFIG_DYNAMIC_DEBUG)]
/// `_DPRINTK_CLASS_DFLT`: the callsite belongs to no class.
const CLASS_DEFAULT: u32 = (1 << 6) - 1;

#[cfg(CONFIG_DYNAMIC_DEBUG)]
/// One callsite, laid out as `struct _ddebug` without `CONFIG_JUMP_LABEL`.
///
/// # Invariants
///
/// The four strings are static and NUL-terminated; `bits` holds the C
/// bit-fields `lineno:18`, `class_id:6` and `flags:8`, from the least
/// significant bit as the x86-64 ABI allocates them.
#[repr(C, align(8))]
pub(crate) struct Callsite {
    modname: *const c_char,
    function: *const c_char,
    filename: *const c_char,
    format: *const c_char,
    bits: AtomicU32,
}

#[cfg(CONFIG_DYNAMIC_DEBUG)]
// CAST: `Callsite` is `struct _ddebug`: four pointers then the bit-field
// word, aligned to 8. With `CONFIG_JUMP_LABEL` the C struct ends with a
// static key and this assertion fails the build.
const _: () =
    assert!(core::mem::size_of::<Callsite>() == core::mem::size_of::<bindings::_ddebug>());

#[cfg(CONFIG_DYNAMIC_DEBUG)]
// SAFETY: The pointers are to static strings that nobody writes; the only
// mutable part, the flags, is atomic (dynamic debug writes it under its own
// lock, callsites only read it).
unsafe impl Sync for Callsite {}

#[cfg(CONFIG_DYNAMIC_DEBUG)]
impl Callsite {
    /// A callsite of this module at `file:line` in `function`, listed in
    /// `/proc/dynamic_debug/control` with `format`; off.
    pub(crate) const fn new(
        function: &'static CStr,
        file: &'static CStr,
        format: &'static CStr,
        line: u32,
    ) -> Self {
        // INVARIANT: static C strings; flags 0, the default class.
        Callsite {
            modname: c_str!("vfio_mig_sample").as_char_ptr(),
            function: function.as_char_ptr(),
            filename: file.as_char_ptr(),
            format: format.as_char_ptr(),
            bits: AtomicU32::new((line & 0x3ffff) | (CLASS_DEFAULT << 18)),
        }
    }

    /// Whether the callsite is switched on.
    pub(crate) fn enabled(&self) -> bool {
        (self.bits.load(Ordering::Relaxed) >> 24) & FLAG_PRINT != 0
    }

    /// Prints `args` at `KERN_DEBUG`, with the prefixes the callsite's
    /// flags ask for.
    pub(crate) fn print(&'static self, args: fmt::Arguments<'_>) {
        // SAFETY: `self` is a static `struct _ddebug` (see the `CAST:` above)
        // in the `__dyndbg` section, which dynamic debug knows from module
        // load on; `%pA` takes a pointer to `fmt::Arguments`, valid for the
        // call.
        unsafe {
            crate::sys::__dynamic_pr_debug(
                (self as *const Callsite).cast_mut().cast(),
                c_str!("%pA").as_char_ptr(),
                (&args as *const fmt::Arguments<'_>).cast::<core::ffi::c_void>(),
            )
        };
    }
}

/// Logs a debug line (a newline is added) through dynamic debug, off by
/// default: why a request was refused, typically.
macro_rules! dyn_debug {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(CONFIG_DYNAMIC_DEBUG)]
        {
            // No `#[used]`: on ELF it sets SHF_GNU_RETAIN, the bit the
            // module loader reads as SHF_RO_AFTER_INIT, and dynamic debug
            // writes the flags. The static is used by the code below.
            #[link_section = "__dyndbg"]
            static CALLSITE: $crate::dyndbg::Callsite = $crate::dyndbg::Callsite::new(
                ::kernel::c_str!(module_path!()),
                ::kernel::c_str!(file!()),
                ::kernel::c_str!($fmt),
                line!(),
            );
            if CALLSITE.enabled() {
                CALLSITE.print(format_args!(concat!($fmt, "\n") $(, $arg)*));
            }
        }
        #[cfg(not(CONFIG_DYNAMIC_DEBUG))]
        {
            let _ = format_args!($fmt $(, $arg)*);
        }
    }};
}
pub(crate) use dyn_debug;
