//! [`Tensor`]: an n-d array that carries its dtype.

use crate::dtype::{DType, Element, C128, C64};
use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Dimension, IxDyn, ShapeBuilder};
use std::borrow::Cow;
use std::fmt;
use std::io::Read;

/// What went wrong when building, viewing or decoding a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// A typed view asked for another dtype than the tensor holds.
    #[error("dtype mismatch: the tensor holds {found}, but {expected} was requested")]
    DtypeMismatch {
        /// The dtype that was asked for.
        expected: DType,
        /// The dtype the tensor holds.
        found: DType,
    },
    /// The number of elements or bytes does not fit the shape.
    #[error("shape {shape:?} of {dtype} needs {expected} bytes, but {found} were given")]
    LengthMismatch {
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes that were given.
        found: usize,
    },
    /// The shape's element count or byte size overflows `usize`.
    #[error("shape {shape:?} of {dtype} is too large: its byte size overflows")]
    Overflow {
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Vec<usize>,
    },
    /// A bool tensor's byte was neither 0 nor 1.
    #[error("invalid bool byte {byte:#04x} at element {index}")]
    InvalidBool {
        /// Element index in row-major order.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
    /// Reading the bytes from a reader failed.
    #[error("reading tensor bytes failed: {0}")]
    Io(String),
}

/// Byte size of `shape` elements of `dtype`, with checked arithmetic.
pub fn checked_nbytes(dtype: DType, shape: &[usize]) -> Result<usize, TensorError> {
    let overflow = || TensorError::Overflow {
        dtype,
        shape: shape.to_vec(),
    };
    if let [n] = *shape {
        // The common 1-d case.
        return n
            .checked_mul(dtype.itemsize())
            .filter(|&b| b <= isize::MAX as usize)
            .ok_or_else(overflow);
    }
    // ndarray also requires the product of the non-zero axis lengths to fit `isize`, even when
    // another axis is 0, so a shape like [0, 2^63] is refused here rather than panicking there.
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.itemsize(), |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(overflow)?;
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}

/// The storage of a tensor: one owned, row-major ndarray per dtype.
#[derive(Clone)]
enum Data {
    Bool(ArrayD<bool>),
    U8(ArrayD<u8>),
    U16(ArrayD<u16>),
    U32(ArrayD<u32>),
    U64(ArrayD<u64>),
    I8(ArrayD<i8>),
    I16(ArrayD<i16>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    F16(ArrayD<f16>),
    BF16(ArrayD<bf16>),
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    C64(ArrayD<C64>),
    C128(ArrayD<C128>),
}

/// Runs `$body` with `$a` bound to the inner array of any variant.
macro_rules! dispatch {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            Data::Bool($a) => $body,
            Data::U8($a) => $body,
            Data::U16($a) => $body,
            Data::U32($a) => $body,
            Data::U64($a) => $body,
            Data::I8($a) => $body,
            Data::I16($a) => $body,
            Data::I32($a) => $body,
            Data::I64($a) => $body,
            Data::F16($a) => $body,
            Data::BF16($a) => $body,
            Data::F32($a) => $body,
            Data::F64($a) => $body,
            Data::C64($a) => $body,
            Data::C128($a) => $body,
        }
    };
}

/// Runs `$body` with the type alias `$t` set to the element type of `$dtype`, which is not
/// bool (bool tensors are decoded through a checked path).
macro_rules! by_native_type {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Bool => unreachable!("bool tensors are decoded through a checked path"),
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::U16 => {
                type $t = u16;
                $body
            }
            DType::U32 => {
                type $t = u32;
                $body
            }
            DType::U64 => {
                type $t = u64;
                $body
            }
            DType::I8 => {
                type $t = i8;
                $body
            }
            DType::I16 => {
                type $t = i16;
                $body
            }
            DType::I32 => {
                type $t = i32;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            DType::F16 => {
                type $t = f16;
                $body
            }
            DType::BF16 => {
                type $t = bf16;
                $body
            }
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::C64 => {
                type $t = C64;
                $body
            }
            DType::C128 => {
                type $t = C128;
                $body
            }
        }
    };
}

/// A copy of `bytes` as values of `T` in native byte order: one allocation, no zero-fill. `T`
/// must not be bool, and `bytes.len()` must be a multiple of its size (checked_nbytes).
#[cfg(target_endian = "little")]
#[inline(always)]
fn native_vec<T: Storable>(bytes: &[u8]) -> Vec<T> {
    debug_assert!(T::DTYPE != DType::Bool && bytes.len().is_multiple_of(std::mem::size_of::<T>()));
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut v: Vec<T> = Vec::with_capacity(n);
    // SAFETY: T is not bool, so every bit pattern is a valid T and it has no padding; the
    // capacity holds n * size_of::<T>() == bytes.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().cast::<u8>(), bytes.len());
        v.set_len(n);
    }
    v
}

/// Hints the CPU to fetch into cache the memory just after a small buffer of `len` bytes at
/// `p`: allocators hand out runs of same-sized blocks one after the other, so that is most
/// likely where the next tensor of a checkpoint is copied, and its copy then finds the memory
/// in cache instead of waiting for it. Only a hint: nothing is read or written, and a wrong
/// guess costs nothing but the fetch. (`prefetcht0`: x86_64 without the `prfchw` feature has
/// no prefetch for writing, and LLVM emits this for `_MM_HINT_ET0` too.)
#[inline(always)]
fn prefetch_next(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if len <= 1024 {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = len;
        while off < 2 * len + 64 {
            // SAFETY: a prefetch never faults nor changes memory, whatever the address (which
            // is computed with wrapping arithmetic, never dereferenced); SSE, which it needs, is
            // part of every x86_64 CPU.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast()) };
            off += 64;
        }
    }
}

/// Per-element-type plumbing between [`Element`] and the storage enum. Not public API.
#[doc(hidden)]
pub trait Storable: Element {
    fn wrap(a: ArrayD<Self>) -> DataBox;
    fn get(d: &DataBox) -> Option<&ArrayD<Self>>;
    fn get_mut(d: &mut DataBox) -> Option<&mut ArrayD<Self>>;
    fn take(d: DataBox) -> Result<ArrayD<Self>, DataBox>;
}

/// Opaque wrapper so the storage enum stays private.
#[doc(hidden)]
pub struct DataBox(Data);

macro_rules! storable {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl Storable for $t {
            fn wrap(a: ArrayD<Self>) -> DataBox { DataBox(Data::$v(a)) }
            fn get(d: &DataBox) -> Option<&ArrayD<Self>> {
                match &d.0 { Data::$v(a) => Some(a), _ => None }
            }
            fn get_mut(d: &mut DataBox) -> Option<&mut ArrayD<Self>> {
                match &mut d.0 { Data::$v(a) => Some(a), _ => None }
            }
            fn take(d: DataBox) -> Result<ArrayD<Self>, DataBox> {
                match d.0 { Data::$v(a) => Ok(a), other => Err(DataBox(other)) }
            }
        }
    )*};
}

storable! {
    bool => Bool, u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    f16 => F16, bf16 => BF16, f32 => F32, f64 => F64, C64 => C64, C128 => C128,
}

/// An n-d array with its dtype: the value of a [`Variable`](crate::Variable) and the array leaf
/// of a [`Pytree`](crate::Pytree).
///
/// Storage is always row-major (C order) and contiguous, so [`Tensor::le_bytes`] is a borrow on
/// little-endian machines. Equality (`==`) is bitwise: same dtype, same shape, same bytes (NaN
/// payloads and `-0.0` included).
#[derive(Clone)]
pub struct Tensor {
    data: DataBox,
}

impl Clone for DataBox {
    fn clone(&self) -> Self {
        DataBox(self.0.clone())
    }
}

fn byte_view<T: Element>(s: &[T]) -> &[u8] {
    // SAFETY: every Element type is plain data without padding (bool is one byte holding 0 or 1,
    // complex numbers are `repr(C)` pairs of floats), so all of its bytes are initialised.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Size of the unit whose bytes are swapped on a big-endian machine.
fn swap_unit(dtype: DType) -> usize {
    match dtype {
        DType::C64 => 4,
        DType::C128 => 8,
        d => d.itemsize(),
    }
}

/// Reverses the byte order of each `unit`-sized group in place (little <-> native on BE).
#[cfg_attr(target_endian = "little", allow(dead_code))]
fn swap_units(bytes: &mut [u8], unit: usize) {
    if unit > 1 {
        for c in bytes.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

/// A dtype and shape checked once, for building many tensors of that shape from bytes
/// ([`TensorLayout::push_from_le_bytes`]): the ndarray shape and strides are built once and cloned,
/// which is cheaper than building them per tensor when a checkpoint holds thousands.
#[derive(Clone, Debug)]
pub(crate) struct TensorLayout {
    dtype: DType,
    dim: IxDyn,
    strides: IxDyn,
    nbytes: usize,
}

impl TensorLayout {
    /// The layout of `shape` elements of `dtype`; an error if its byte size overflows (as
    /// [`checked_nbytes`]).
    pub(crate) fn new(dtype: DType, shape: &[usize]) -> Result<TensorLayout, TensorError> {
        let nbytes = checked_nbytes(dtype, shape)?;
        // Row-major strides, all zero when an axis is 0 (ndarray's default strides).
        let mut strides = vec![0usize; shape.len()];
        if !shape.contains(&0) {
            let mut step = 1usize;
            for (s, &d) in strides.iter_mut().zip(shape).rev() {
                *s = step;
                // checked_nbytes bounded the product of the axes.
                step *= d;
            }
        }
        Ok(TensorLayout {
            dtype,
            dim: IxDyn(shape),
            strides: IxDyn(&strides),
            nbytes,
        })
    }

    /// The dtype.
    #[inline]
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether this is the layout of `shape` elements of `dtype`.
    #[inline]
    pub(crate) fn is(&self, dtype: DType, shape: &[usize]) -> bool {
        self.dtype == dtype && self.dim.slice() == shape
    }

    /// Pushes onto `out` a tensor of this layout holding a copy of `bytes` (little-endian,
    /// row-major), as [`Tensor::from_le_bytes`] with this dtype and shape, or returns its error
    /// (pushing nothing). The tensor is built in its slot: returned, then pushed, it was copied
    /// through the stack right after it was written, and that load waited for the copy of the
    /// payload into memory not yet in cache.
    #[inline(always)]
    pub(crate) fn push_from_le_bytes<P>(
        &self,
        bytes: &[u8],
        out: &mut Vec<P>,
        wrap: impl Fn(Tensor) -> P,
    ) -> Result<(), TensorError> {
        #[cfg(target_endian = "little")]
        if self.dtype != DType::Bool && bytes.len() == self.nbytes {
            by_native_type!(self.dtype, T => {
                // The shape first: built after the copy, its stores queued behind the copy's
                // into memory not yet in cache, and ndarray's loads of it waited for all of them.
                let shape = self.dim.clone().strides(self.strides.clone());
                let v = native_vec::<T>(bytes);
                prefetch_next(v.as_ptr().cast(), bytes.len());
                // SAFETY: the shape's element count is v.len() (checked_nbytes checked the byte
                // size, and that the product of the non-zero axes fits isize), and the strides
                // are the default row-major ones, which over exactly that many elements stay
                // inside v and never alias two indices.
                let a = unsafe { ArrayD::from_shape_vec_unchecked(shape, v) };
                out.push(wrap(Tensor { data: T::wrap(a) }));
            });
            return Ok(());
        }
        out.push(wrap(Tensor::from_le_bytes(self.dtype, self.dim.slice(), bytes)?));
        Ok(())
    }
}

impl Tensor {
    /// Wraps an ndarray of any shape; non-standard layouts are copied into row-major order.
    pub fn from_array<T: Storable, D: ndarray::Dimension>(a: ndarray::Array<T, D>) -> Tensor {
        let a = a.into_dyn();
        let a = if a.is_standard_layout() {
            a
        } else {
            a.as_standard_layout().into_owned()
        };
        Tensor { data: T::wrap(a) }
    }

    /// A tensor of `shape` built from row-major `values`.
    pub fn from_vec<T: Storable>(shape: &[usize], values: Vec<T>) -> Result<Tensor, TensorError> {
        let n = values.len();
        let found = n * T::DTYPE.itemsize();
        let expected = checked_nbytes(T::DTYPE, shape)?;
        let a = ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|_| TensorError::LengthMismatch {
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            expected,
            found,
        })?;
        Ok(Tensor { data: T::wrap(a) })
    }

    /// A 0-d tensor holding `value`.
    pub fn scalar<T: Storable>(value: T) -> Tensor {
        Tensor {
            data: T::wrap(ArrayD::from_elem(IxDyn(&[]), value)),
        }
    }

    /// A tensor of zeros (false for bool).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, TensorError> {
        checked_nbytes(dtype, shape)?;
        fn z<T: Storable>(shape: &[usize]) -> Tensor {
            Tensor {
                data: T::wrap(ArrayD::from_elem(IxDyn(shape), T::default())),
            }
        }
        Ok(match dtype {
            DType::Bool => z::<bool>(shape),
            DType::U8 => z::<u8>(shape),
            DType::U16 => z::<u16>(shape),
            DType::U32 => z::<u32>(shape),
            DType::U64 => z::<u64>(shape),
            DType::I8 => z::<i8>(shape),
            DType::I16 => z::<i16>(shape),
            DType::I32 => z::<i32>(shape),
            DType::I64 => z::<i64>(shape),
            DType::F16 => z::<f16>(shape),
            DType::BF16 => z::<bf16>(shape),
            DType::F32 => z::<f32>(shape),
            DType::F64 => z::<f64>(shape),
            DType::C64 => z::<C64>(shape),
            DType::C128 => z::<C128>(shape),
        })
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        match &self.data.0 {
            Data::Bool(_) => DType::Bool,
            Data::U8(_) => DType::U8,
            Data::U16(_) => DType::U16,
            Data::U32(_) => DType::U32,
            Data::U64(_) => DType::U64,
            Data::I8(_) => DType::I8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
            Data::C64(_) => DType::C64,
            Data::C128(_) => DType::C128,
        }
    }

    /// The shape (empty for a 0-d tensor).
    pub fn shape(&self) -> &[usize] {
        dispatch!(&self.data.0, a => a.shape())
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        dispatch!(&self.data.0, a => a.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the raw data in bytes.
    pub fn nbytes(&self) -> usize {
        self.len() * self.dtype().itemsize()
    }

    /// A typed read-only view; an error if `T` is not the tensor's dtype.
    pub fn as_array<T: Storable>(&self) -> Result<ArrayViewD<'_, T>, TensorError> {
        T::get(&self.data).map(|a| a.view()).ok_or(self.mismatch::<T>())
    }

    /// A typed mutable view (the shape cannot change through it).
    pub fn as_array_mut<T: Storable>(&mut self) -> Result<ArrayViewMutD<'_, T>, TensorError> {
        let err = self.mismatch::<T>();
        T::get_mut(&mut self.data).map(|a| a.view_mut()).ok_or(err)
    }

    /// The elements as a row-major slice.
    pub fn as_slice<T: Storable>(&self) -> Result<&[T], TensorError> {
        let a = T::get(&self.data).ok_or(self.mismatch::<T>())?;
        Ok(a.as_slice().expect("tensors are stored in standard layout"))
    }

    /// The elements as a mutable row-major slice.
    pub fn as_slice_mut<T: Storable>(&mut self) -> Result<&mut [T], TensorError> {
        let err = self.mismatch::<T>();
        let a = T::get_mut(&mut self.data).ok_or(err)?;
        Ok(a.as_slice_mut().expect("tensors are stored in standard layout"))
    }

    /// Unwraps the owned ndarray; gives the tensor back if `T` is not its dtype.
    pub fn into_array<T: Storable>(self) -> Result<ArrayD<T>, Tensor> {
        T::take(self.data).map_err(|data| Tensor { data })
    }

    fn mismatch<T: Element>(&self) -> TensorError {
        TensorError::DtypeMismatch {
            expected: T::DTYPE,
            found: self.dtype(),
        }
    }

    /// The raw little-endian, row-major bytes (borrowed on little-endian machines).
    pub fn le_bytes(&self) -> Cow<'_, [u8]> {
        let native: &[u8] = dispatch!(&self.data.0, a => byte_view(a.as_slice().expect("standard layout")));
        if cfg!(target_endian = "little") {
            Cow::Borrowed(native)
        } else {
            let mut v = native.to_vec();
            swap_units(&mut v, swap_unit(self.dtype()));
            Cow::Owned(v)
        }
    }

    /// Builds a tensor from raw little-endian, row-major bytes. Checks the length and, for bool,
    /// that every byte is 0 or 1.
    pub fn from_le_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, TensorError> {
        // Check the length before allocating, so a hostile shape cannot drive the allocation.
        let expected = checked_nbytes(dtype, shape)?;
        if expected != bytes.len() {
            return Err(TensorError::LengthMismatch {
                dtype,
                shape: shape.to_vec(),
                expected,
                found: bytes.len(),
            });
        }
        #[cfg(target_endian = "little")]
        if dtype != DType::Bool {
            return Ok(Tensor::copy_native(dtype, shape, bytes));
        }
        Tensor::read_le(dtype, shape, &mut &bytes[..])
    }

    /// A tensor holding a copy of `bytes` (native byte order, non-bool dtype, `bytes.len()` equal
    /// to the checked byte size of `shape`): one allocation and one copy, no zero-fill.
    #[cfg(target_endian = "little")]
    fn copy_native(dtype: DType, shape: &[usize], bytes: &[u8]) -> Tensor {
        by_native_type!(dtype, T => {
            let v = native_vec::<T>(bytes);
            let a = if shape.len() == 1 {
                // The common 1-d case skips the generic shape checks.
                debug_assert_eq!(shape[0], v.len());
                ndarray::Array1::from_vec(v).into_dyn()
            } else {
                // SAFETY: the shape's element count is v.len() (checked_nbytes checked the byte
                // size, and that the product of the non-zero axes fits isize), and default
                // row-major strides over exactly that many elements stay inside v and never
                // alias two indices.
                unsafe { ArrayD::from_shape_vec_unchecked(IxDyn(shape), v) }
            };
            Tensor { data: T::wrap(a) }
        })
    }

    /// Reads exactly the tensor's bytes (little-endian, row-major) from `reader` straight into a
    /// new tensor's buffer: one allocation of the tensor's size, no intermediate copy. The
    /// caller checks the size against what the reader can supply before calling this, since
    /// the buffer is allocated first.
    pub fn read_le(dtype: DType, shape: &[usize], reader: &mut dyn Read) -> Result<Tensor, TensorError> {
        let nbytes = checked_nbytes(dtype, shape)?;
        let mut t = Tensor::zeros(dtype, shape)?;
        if dtype == DType::Bool {
            let mut raw = vec![0u8; nbytes];
            read_exact(reader, &mut raw, dtype, shape)?;
            if let Some((index, &byte)) = raw.iter().enumerate().find(|(_, &b)| b > 1) {
                return Err(TensorError::InvalidBool { index, byte });
            }
            let dst = t.as_slice_mut::<bool>().expect("bool tensor");
            for (d, s) in dst.iter_mut().zip(raw) {
                *d = s == 1;
            }
            return Ok(t);
        }
        let buf = t.native_bytes_mut();
        read_exact(reader, buf, dtype, shape)?;
        #[cfg(target_endian = "big")]
        swap_units(buf, swap_unit(dtype));
        Ok(t)
    }

    /// Mutable raw bytes of a non-bool tensor (every bit pattern is a valid value for those).
    fn native_bytes_mut(&mut self) -> &mut [u8] {
        fn bytes_mut<T: Element>(s: &mut [T]) -> &mut [u8] {
            // SAFETY: only called for dtypes where every bit pattern is valid (not bool), no padding.
            unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
        }
        match &mut self.data.0 {
            Data::Bool(_) => unreachable!("bool tensors are decoded through a checked path"),
            Data::U8(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::U16(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::U32(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::U64(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::I8(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::I16(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::I32(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::I64(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::F16(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::BF16(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::F32(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::F64(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::C64(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
            Data::C128(a) => bytes_mut(a.as_slice_mut().expect("standard layout")),
        }
    }

    /// Returns a copy with a new shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected = checked_nbytes(self.dtype(), shape)?;
        if expected != self.nbytes() {
            return Err(TensorError::LengthMismatch {
                dtype: self.dtype(),
                shape: shape.to_vec(),
                expected,
                found: self.nbytes(),
            });
        }
        let data = dispatch!(&self.data.0, a => {
            let v = a.as_slice().expect("standard layout").to_vec();
            Storable::wrap(ArrayD::from_shape_vec(IxDyn(shape), v).expect("length checked"))
        });
        Ok(Tensor { data })
    }

    /// The tensor's summary, as BrainPy prints a leaf: `f32[2, 3]`.
    pub fn summary(&self) -> String {
        let dims: Vec<String> = self.shape().iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.dtype().short_name(), dims.join(", "))
    }

    /// Formats up to `max` elements numpy-style (`[0. 1. 2. ... 9.]`); row structure is flattened.
    pub fn format_values(&self, max: usize) -> String {
        fn fmt_all<T: fmt::Debug>(a: &ArrayD<T>, max: usize) -> String {
            let s = a.as_slice().expect("standard layout");
            if a.ndim() == 0 {
                return format!("{:?}", s[0]);
            }
            let mut parts: Vec<String> = Vec::new();
            if s.len() <= max {
                parts.extend(s.iter().map(|v| format!("{v:?}")));
            } else {
                let half = max.div_ceil(2).max(1);
                parts.extend(s[..half].iter().map(|v| format!("{v:?}")));
                parts.push("...".into());
                parts.extend(s[s.len() - (max / 2).max(1)..].iter().map(|v| format!("{v:?}")));
            }
            format!("[{}]", parts.join(", "))
        }
        dispatch!(&self.data.0, a => fmt_all(a, max))
    }
}

fn read_exact(
    reader: &mut dyn Read,
    buf: &mut [u8],
    dtype: DType,
    shape: &[usize],
) -> Result<(), TensorError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TensorError::LengthMismatch {
                dtype,
                shape: shape.to_vec(),
                expected: buf.len(),
                found: 0,
            }
        } else {
            TensorError::Io(e.to_string())
        }
    })
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.dtype() == other.dtype() && self.shape() == other.shape() && self.le_bytes() == other.le_bytes()
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.summary(), self.format_values(8))
    }
}

impl<T: Storable, D: ndarray::Dimension> From<ndarray::Array<T, D>> for Tensor {
    fn from(a: ndarray::Array<T, D>) -> Tensor {
        Tensor::from_array(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn layout_built_tensors_equal_from_le_bytes() {
        // The pushed tensor, checking that an error pushes nothing.
        fn build(l: &TensorLayout, bytes: &[u8]) -> Result<Tensor, TensorError> {
            let mut out = vec![Tensor::scalar(0u8)];
            match l.push_from_le_bytes(bytes, &mut out, |t| t) {
                Ok(()) => {
                    assert_eq!(out.len(), 2);
                    Ok(out.pop().unwrap())
                }
                Err(e) => {
                    assert_eq!(out.len(), 1);
                    Err(e)
                }
            }
        }
        // 0-d, empty axes, 1-d, n-d and more axes than ndarray keeps inline; every dtype.
        let shapes: [&[usize]; 7] = [&[], &[0], &[3], &[2, 0, 3], &[2, 3, 4], &[1, 2, 1, 3, 2], &[1]];
        for d in DType::ALL {
            for shape in shapes {
                let l = TensorLayout::new(d, shape).unwrap();
                assert!(l.is(d, shape));
                assert!(!l.is(d, &[7, 7]));
                let n = checked_nbytes(d, shape).unwrap();
                let bytes: Vec<u8> = (0..n)
                    .map(|i| if d == DType::Bool { (i % 2) as u8 } else { i as u8 })
                    .collect();
                let a = build(&l, &bytes).unwrap();
                let b = Tensor::from_le_bytes(d, shape, &bytes).unwrap();
                assert!(a == b, "{d} {shape:?}");
                assert_eq!(a.shape(), shape);
                assert_eq!(a.le_bytes(), b.le_bytes());
                let strides = dispatch!(&a.data.0, x => x.strides().to_vec());
                let want = dispatch!(&b.data.0, x => x.strides().to_vec());
                assert_eq!(strides, want, "{d} {shape:?}");
                // A wrong length is the same error as from_le_bytes gives.
                assert_eq!(
                    build(&l, &bytes[..n.saturating_sub(1)]).map(|_| ()),
                    Tensor::from_le_bytes(d, shape, &bytes[..n.saturating_sub(1)]).map(|_| ())
                );
            }
        }
        let bad = build(&TensorLayout::new(DType::Bool, &[2]).unwrap(), &[0, 2]);
        assert!(matches!(bad, Err(TensorError::InvalidBool { index: 1, byte: 2 })));
        assert!(TensorLayout::new(DType::F64, &[usize::MAX, 2]).is_err());
    }

    #[test]
    fn typed_views_check_dtype() {
        let t = Tensor::from(array![[1.0f32, 2.0], [3.0, 4.0]]);
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.shape(), &[2, 2]);
        assert_eq!(t.as_array::<f32>().unwrap()[[1, 0]], 3.0);
        assert_eq!(
            t.as_array::<f64>().unwrap_err(),
            TensorError::DtypeMismatch {
                expected: DType::F64,
                found: DType::F32
            }
        );
        assert_eq!(t.summary(), "f32[2, 2]");
    }

    #[test]
    fn le_bytes_round_trip_every_dtype() {
        for d in DType::ALL {
            let n = 3 * d.itemsize();
            let bytes: Vec<u8> = (0..n)
                .map(|i| if d == DType::Bool { (i % 2) as u8 } else { i as u8 })
                .collect();
            let t = Tensor::from_le_bytes(d, &[3], &bytes).unwrap();
            assert_eq!(t.dtype(), d);
            assert_eq!(&*t.le_bytes(), &bytes[..]);
        }
        let f = Tensor::from_vec(&[2], vec![1.0f32, 2.0]).unwrap();
        assert_eq!(&*f.le_bytes(), &[0, 0, 0x80, 0x3f, 0, 0, 0, 0x40]);
    }

    #[test]
    fn bad_bytes_are_rejected() {
        assert!(matches!(
            Tensor::from_le_bytes(DType::Bool, &[2], &[0, 2]),
            Err(TensorError::InvalidBool { index: 1, byte: 2 })
        ));
        assert!(matches!(
            Tensor::from_le_bytes(DType::F32, &[2], &[0; 7]),
            Err(TensorError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Tensor::from_le_bytes(DType::F32, &[2], &[0; 9]),
            Err(TensorError::LengthMismatch { .. })
        ));
        assert!(matches!(
            Tensor::zeros(DType::F64, &[usize::MAX, 2]),
            Err(TensorError::Overflow { .. })
        ));
        assert!(Tensor::from_vec(&[3], vec![1i32, 2]).is_err());
        // Zero-size shapes whose other axes are huge are refused, not a panic inside ndarray.
        assert!(matches!(
            Tensor::zeros(DType::F32, &[0, 1 << 62]),
            Err(TensorError::Overflow { .. })
        ));
        assert_eq!(Tensor::zeros(DType::F32, &[0, 1 << 20]).unwrap().nbytes(), 0);
        // A hostile shape with few bytes is rejected before anything is allocated.
        assert!(matches!(
            Tensor::from_le_bytes(DType::F32, &[1 << 40], &[0; 8]),
            Err(TensorError::LengthMismatch { expected, found: 8, .. }) if expected == 1 << 42
        ));
    }

    #[test]
    fn non_standard_layout_is_normalised() {
        let a = array![[1i64, 2, 3], [4, 5, 6]];
        let t = Tensor::from(a.t().to_owned());
        assert_eq!(t.as_slice::<i64>().unwrap(), &[1, 4, 2, 5, 3, 6]);
    }

    #[test]
    fn equality_is_bitwise() {
        let a = Tensor::scalar(f32::NAN);
        assert_eq!(a, a.clone());
        assert_ne!(Tensor::scalar(0.0f32), Tensor::scalar(-0.0f32));
        assert_ne!(Tensor::scalar(1i32), Tensor::scalar(1i64));
    }
}
