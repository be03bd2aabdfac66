//! What the CPU fast paths of every backbone share: the geometry of an NHWC activation, a
//! pointer that parallel work items may share, per-thread scratch buffers and the spinning
//! thread [`team`] their parallel loops run on, the [`pointwise`] primitives (folded batch
//! normalization, global average pool), and the [`bf16`] convolutions of
//! [`Precision::Bf16`](crate::model::Precision).

pub(crate) mod bf16;
mod pointwise;
pub(crate) mod team;

pub(crate) use pointwise::{global_average_pool, ScaleShift};

use crate::error::Error;
use std::cell::RefCell;

/// The geometry of an NHWC activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Nhwc {
    pub(crate) n: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
}

impl Nhwc {
    /// Number of pixels `N * H * W` (the rows of the activation matrix).
    pub(crate) fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Number of scalars.
    pub(crate) fn len(&self) -> usize {
        self.pixels() * self.c
    }

    /// The same pixels with `c` channels.
    pub(crate) fn with_channels(self, c: usize) -> Self {
        Self { c, ..self }
    }
}

/// A raw pointer that work items may share because they touch disjoint parts of its buffer.
pub(crate) struct SharedMut<T = f32>(pub(crate) *mut T);
// SAFETY: every use writes a disjoint set of rows/columns per work item (see `conv`).
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    pub(crate) fn ptr(self) -> *mut T {
        self.0
    }

    /// Values `start..start + len` of the buffer.
    ///
    /// # Safety
    /// The range is inside the buffer, the buffer outlives `'a`, and no other work item
    /// touches the range meanwhile.
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: the caller's contract above.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// Run `f` on the first `len` values of the calling thread's buffer `key` (grown as needed and
/// kept for the next call), or of a fresh buffer when this thread is already using `key` (a
/// work item that waits inside rayon may run another one on the same thread).
pub(crate) fn with_thread_buffer<T: Copy + Default, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| {
        let mut fallback = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let buf: &mut Vec<T> = match guard.as_mut() {
            Ok(g) => g,
            Err(_) => &mut fallback,
        };
        if buf.len() < len {
            buf.resize(len, T::default());
        }
        f(&mut buf[..len])
    })
}

/// The error of a fast-path kernel handed a buffer too short for its geometry (a bug in the
/// caller, never the user's input).
pub(crate) fn length_error(what: &str, need: usize, have: usize) -> Error {
    Error::Internal(format!(
        "fast-path kernel: {what} needs {need} values, the buffer holds {have}"
    ))
}
