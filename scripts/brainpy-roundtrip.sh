#!/usr/bin/env bash
# Round trip of checkpoints between Rust and the real BrainPy (issue 4, item 5).
#
#   scripts/brainpy-roundtrip.sh [out dir]
#
# 1. Installs BrainPy into the anchor venv ($ANCHOR_VENV, default ~/.cache/brainpy-anchor) with
#    shared/anchors/setup.sh (about 2 minutes the first time; needs PyPI).
# 2. Rust writes .bp files (`cargo run --example brainpy_interop -- write`).
# 3. BrainPy loads them with bp.checkpoints.load_pytree and checks every leaf (type, dtype, shape,
#    bytes), loads the tutorial state into the tutorial network with bp.load_state (no missing,
#    no unexpected keys, values as written), and writes its own files.
# 4. Rust reads BrainPy's files and checks they are byte-identical to what it writes for the same
#    trees (`cargo run --example brainpy_interop -- check`).
# Not run in CI (it needs the BrainPy venv); exits non-zero on any mismatch.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${BRAINSTATE_SHARED:-}"
if [ -z "$SHARED" ]; then
    for c in "$ROOT/../shared" "$ROOT/../../shared"; do
        if [ -f "$c/anchors/setup.sh" ]; then SHARED="$(cd "$c" && pwd)"; break; fi
    done
fi
[ -n "$SHARED" ] || { echo "shared/anchors not found; set BRAINSTATE_SHARED" >&2; exit 2; }
VENV="${ANCHOR_VENV:-$HOME/.cache/brainpy-anchor}"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

echo "== BrainPy venv ($VENV)"
ANCHOR_VENV="$VENV" bash "$SHARED/anchors/setup.sh"

echo "== Rust writes .bp files into $OUT"
(cd "$ROOT" && cargo run --quiet --example brainpy_interop -- write "$OUT")

echo "== BrainPy loads Rust's files and writes its own"
(cd "$OUT" && "$VENV/bin/python" - "$OUT" <<'PY')
import sys
import numpy as np
import ml_dtypes
import brainpy as bp
import brainpy.math as bm
import braintools.file._msg_checkpoint as mc

bp.math.set_platform('cpu')
d = sys.argv[1]
NAMES = ['bool', 'uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'int32', 'int64',
         'float16', 'bfloat16', 'float32', 'float64', 'complex64', 'complex128']


def arange6(name):
    a = np.arange(6)
    if name == 'bool':
        v = a % 2 == 1
    elif name.startswith('complex'):
        v = (a - 1j * a).astype(name)
    elif name == 'bfloat16':
        v = a.astype(ml_dtypes.bfloat16)
    else:
        v = a.astype(name)
    return v.reshape(2, 3)


# The same trees as examples/brainpy_interop.rs builds.
every = {
    'arrays': {n: arange6(n) for n in NAMES},
    'u64_max': np.array([2**64 - 1], np.uint64),
    'zero_d': np.array(2.5, np.float32),
    'np_scalar_f32': np.float32(1.5), 'np_scalar_i64': np.int64(-7), 'np_scalar_bool': np.bool_(True),
    'int': 42, 'neg': -5, 'big': 2**64 - 1, 'i64min': -2**63,
    'float': 0.1, 'complex': 1 + 2j, 'bool': True, 'str': 'Δt = 0.1 ms', 'bytes': b'\x00\xff', 'none': None,
    'nested': {'a': {'b': np.array([1., 2.])}}, 'empty': {},
    'list': [1, 'x', np.array([3], np.int16)],
}
bare = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
big = np.arange(40, dtype=np.float32)
checked = 0


def same(a, b, path='/'):
    global checked
    if isinstance(b, (list, tuple)):
        b = {str(i): v for i, v in enumerate(b)}
    if isinstance(b, dict):
        assert isinstance(a, dict), (path, type(a))
        assert list(a) == list(b), (path, list(a), list(b))
        for k in b:
            same(a[k], b[k], path + k + '/')
        return
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(b, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (path, a, b)
    elif isinstance(b, float):
        assert a.hex() == b.hex(), (path, a, b)
    else:
        assert a == b, (path, a, b)
    checked += 1


for name, want in [('rust_every_kind.bp', every), ('rust_bare_array.bp', bare), ('rust_chunked.bp', big)]:
    got = bp.checkpoints.load_pytree(f'{d}/{name}')
    same(got, want)
    print(f'load_pytree({name}): every leaf has the expected type, dtype, shape and bytes')
print(f'{checked} leaves checked')


class SNN(bp.DynamicalSystem):  # the tutorial's example 1
    def __init__(self):
        super().__init__()
        self.var = bm.Variable(bm.zeros(1))
        self.l1 = bp.dnn.Dense(28 * 28, 10, b_initializer=None)
        self.l2 = bp.dyn.Lif(10, V_rest=0., V_reset=0., V_th=1., tau=2.0, spk_fun=bm.surrogate.Arctan())

    def update(self, x):
        return x >> self.l1 >> self.l2


net = SNN()
bp.checkpoints.save_pytree(f'{d}/py_tutorial_fresh.bp', net.state_dict())
res = bp.load_state(net, bp.checkpoints.load_pytree(f'{d}/rust_tutorial.bp'))
print('bp.load_state(net, load_pytree(rust_tutorial.bp)) ->', res)
assert list(res.missing_keys) == [] and list(res.unexpected_keys) == [], res
assert np.asarray(net.var.value).tolist() == [3.5]
assert np.asarray(net.l2.V.value).tolist() == [i / 8 for i in range(10)]
assert np.asarray(net.l2.spike.value).tolist() == [i % 3 == 0 for i in range(10)]
print('the network holds the values Rust wrote (var, Lif0.V, Lif0.spike)')
bp.checkpoints.save_pytree(f'{d}/py_tutorial_loaded.bp', net.state_dict())
bp.checkpoints.save_pytree(f'{d}/py_every_kind.bp', every)
bp.checkpoints.save_pytree(f'{d}/py_bare_array.bp', bare)
mc.MAX_CHUNK_SIZE = 64
bp.checkpoints.save_pytree(f'{d}/py_chunked.bp', big)
mc.MAX_CHUNK_SIZE = 2**30
PY

echo "== Rust reads BrainPy's files"
(cd "$ROOT" && cargo run --quiet --example brainpy_interop -- check "$OUT")
echo "== round trip OK"
