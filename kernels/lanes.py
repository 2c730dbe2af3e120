"""Float32 dot products in explicit 8-lane vectors: one summation order for every scan, whatever it batches.

A dot product compiled with fastmath is vectorised by LLVM with a vector width and an interleave that it
picks per loop, from the loop's own register pressure: the same product summed beside one other (a pair
of rows for one query) and beside seven others (two rows times two queries, a register-blocked batch)
comes out with different lanes, hence different last bits. Written with these vectors the order is the
code's: lane l of an accumulator sums ``a[j]·b[j]`` for j ≡ l (mod 8) one FMA at a time, in j order,
and ``fold8`` adds the lanes in a fixed tree. Any blocking of rows and queries then gives the same bits.

``F32x8`` is an LLVM ``<8 x float>`` value (a register, never memory); ``zeros8``, ``fma8`` and ``fold8``
are its only operations. ``fma8`` reads 8 consecutive float32 of two C-contiguous 1-D arrays without a
bounds check: its caller keeps the offsets in range.

``I32x8`` is the same for the int8 bound pass (``kernels.quantized``): ``izeros8``, ``madd16`` (16 int8
codes times 16 int16 query codes, adjacent products summed in pairs into 8 int32 lanes: one ``vpmaddwd``
on AVX2, plain vector IR that any LLVM target lowers) and ``isum8``. Integer sums are exact in any order;
the vectors are there for speed, as LLVM widened the scalar loop to 32-bit multiplies.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_VECTOR = ir.VectorType(ir.FloatType(), 8)
_LANE = ir.IntType(32)


class Lanes(types.Type):
    """The numba type of an LLVM vector value that lives in a register: ``F32x8`` or ``I32x8``."""

    def __init__(self, name: str, vector: ir.VectorType) -> None:
        self.vector = vector
        super().__init__(name=name)


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm: object, fe_type: Lanes) -> None:
        super().__init__(dmm, fe_type, fe_type.vector)


f32x8 = Lanes("F32x8", _VECTOR)
"""Eight float32 lanes."""


def _vector_of(ty: types.Type, dtype: types.Type) -> bool:
    """Whether ``ty`` is a C-contiguous 1-D array of ``dtype``, the arrays the lanes load from."""
    return isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == 1 and ty.layout == "C"


def _load(context, builder, array, array_type, at, vector, align):  # noqa: ANN001, ANN202 - numba's lowering objects
    """IR that loads ``vector`` (an LLVM vector type) from element ``at`` of a C-contiguous 1-D ``array``,
    without a bounds check, aligned only to ``align`` bytes (its elements')."""
    data = context.make_array(array_type)(context, builder, array).data
    pointer = builder.bitcast(builder.gep(data, [at]), vector.as_pointer())
    return builder.load(pointer, align=align)


@intrinsic
def zeros8(typingctx: object) -> tuple:
    """Eight lanes of +0.0."""

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202 - numba's lowering signature
        return ir.Constant(_VECTOR, [0.0] * 8)

    return f32x8(), codegen


@intrinsic
def fma8(typingctx: object, acc: types.Type, a: types.Type, i: types.Type, b: types.Type, j: types.Type) -> tuple | None:
    """``acc + a[i:i+8] · b[j:j+8]`` lane by lane, each lane one fused multiply-add (``llvm.fma``, one
    rounding whatever the CPU); ``a`` and ``b`` are C-contiguous 1-D float32 arrays."""
    if acc != f32x8 or not (_vector_of(a, types.float32) and _vector_of(b, types.float32)):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        total, x, x_at, y, y_at = args
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v8f32")
        x_lanes = _load(context, builder, x, sig.args[1], x_at, _VECTOR, 4)
        y_lanes = _load(context, builder, y, sig.args[3], y_at, _VECTOR, 4)
        return builder.call(fma, [x_lanes, y_lanes, total])

    return f32x8(acc, a, i, b, j), codegen


@intrinsic
def fold8(typingctx: object, acc: types.Type) -> tuple | None:
    """The sum of the eight lanes as a float32, always ``((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))``."""
    if acc != f32x8:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        lane = [builder.extract_element(args[0], ir.Constant(_LANE, k)) for k in range(8)]
        even = builder.fadd(builder.fadd(lane[0], lane[4]), builder.fadd(lane[2], lane[6]))
        odd = builder.fadd(builder.fadd(lane[1], lane[5]), builder.fadd(lane[3], lane[7]))
        return builder.fadd(even, odd)

    return types.float32(acc), codegen


_INT_VECTOR = ir.VectorType(ir.IntType(32), 8)
_CODES = ir.VectorType(ir.IntType(8), 16)
_QUERY_CODES = ir.VectorType(ir.IntType(16), 16)
_PRODUCTS = ir.VectorType(ir.IntType(32), 16)


i32x8 = Lanes("I32x8", _INT_VECTOR)
"""Eight int32 lanes."""


@intrinsic
def izeros8(typingctx: object) -> tuple:
    """Eight int32 lanes of 0."""

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return ir.Constant(_INT_VECTOR, [0] * 8)

    return i32x8(), codegen


@intrinsic
def madd16(typingctx: object, acc: types.Type, codes: types.Type, i: types.Type, query: types.Type, j: types.Type) -> tuple | None:
    """``acc`` + (c_{2l}·q_{2l} + c_{2l+1}·q_{2l+1}) in lane l, for c = ``codes[i:i+16]`` (int8) and q =
    ``query[j:j+16]`` (int16), both C-contiguous 1-D arrays; each product and pair sum exact in int32
    as long as |c·q| < 2^30 (the bound pass's codes: |c|, |q| ≤ 127)."""
    if acc != i32x8 or not (_vector_of(codes, types.int8) and _vector_of(query, types.int16)):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        total, c, c_at, q, q_at = args
        wide_c = builder.sext(_load(context, builder, c, sig.args[1], c_at, _CODES, 1), _PRODUCTS)
        wide_q = builder.sext(_load(context, builder, q, sig.args[3], q_at, _QUERY_CODES, 2), _PRODUCTS)
        products = builder.mul(wide_c, wide_q)
        even = builder.shuffle_vector(products, products, ir.Constant(_INT_VECTOR, list(range(0, 16, 2))))
        odd = builder.shuffle_vector(products, products, ir.Constant(_INT_VECTOR, list(range(1, 16, 2))))
        return builder.add(total, builder.add(even, odd))

    return i32x8(acc, codes, i, query, j), codegen


@intrinsic
def isum8(typingctx: object, acc: types.Type) -> tuple | None:
    """The sum of the eight int32 lanes."""
    if acc != i32x8:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        lanes = [builder.extract_element(args[0], ir.Constant(_LANE, k)) for k in range(8)]
        total = lanes[0]
        for lane in lanes[1:]:
            total = builder.add(total, lane)
        return total

    return types.int32(acc), codegen
