//! Python buffers in and out of registered memory: a payload (any object with the buffer
//! protocol, C-contiguous) is copied once into an input buffer, a result once out of an
//! output buffer into `bytes` or into a writable Python buffer. The only `unsafe` of the
//! crate: turning a held Python buffer into a slice.

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_py;

/// A C-contiguous Python buffer, held (exported) while this lives.
struct Held {
    buffer: PyUntypedBuffer,
}

impl Held {
    fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Held> {
        let what = if writable { "output" } else { "payload" };
        let buffer = PyUntypedBuffer::get(obj).map_err(|_| {
            PyValueError::new_err(format!(
                "the {what} must support the buffer protocol (bytes, bytearray, memoryview, numpy array …), not {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "this type".into(), |n| n.to_string())
            ))
        })?;
        if !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "the {what} buffer is not C-contiguous; copy it first (numpy: np.ascontiguousarray)"
            )));
        }
        if writable && buffer.readonly() {
            return Err(PyValueError::new_err(
                "the output buffer is read-only; pass a bytearray, a writable memoryview or array",
            ));
        }
        Ok(Held { buffer })
    }

    fn len(&self) -> usize {
        self.buffer.len_bytes()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the buffer is exported (held) as long as `self`, C-contiguous (checked), so
        // `buf_ptr` points to `len_bytes` bytes; the GIL is held by whoever holds a `Held`
        // (it is created from a `Bound`), so no Python code resizes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr().cast::<u8>(), self.len()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the buffer is writable (checked in `get`); `&mut self`
        // keeps this the only slice made from it.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.buf_ptr().cast::<u8>(), self.len()) }
    }
}

/// Copies the payload `data` into `input`; its length. `bytes` skip the buffer protocol.
pub(crate) fn copy_in(data: &Bound<'_, PyAny>, input: &rfaas::InputBuffer) -> PyResult<usize> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        let b = bytes.as_bytes();
        input.write(b).map_err(to_py)?;
        return Ok(b.len());
    }
    let held = Held::get(data, false)?;
    input.write(held.bytes()).map_err(to_py)?;
    Ok(held.len())
}

/// The first `len` bytes of `output` as `bytes`.
pub(crate) fn to_bytes<'py>(
    py: Python<'py>,
    output: &rfaas::OutputBuffer,
    len: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, len, |b| output.read(b).map_err(to_py))
}

/// A writable Python buffer that results are copied into.
pub(crate) struct Destination {
    held: Held,
}

impl Destination {
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Destination> {
        Ok(Destination {
            held: Held::get(obj, true)?,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Copies the first `len` bytes of `output` in; refuses a result longer than the buffer.
    pub(crate) fn fill(&mut self, output: &rfaas::OutputBuffer, len: usize) -> PyResult<()> {
        let room = self.len();
        let Some(dest) = self.held.bytes_mut().get_mut(..len) else {
            return Err(PyValueError::new_err(format!(
                "the result has {len} bytes, more than the {room} of the output buffer"
            )));
        };
        output.read(dest).map_err(to_py)
    }
}
