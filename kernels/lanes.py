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
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_VECTOR = ir.VectorType(ir.FloatType(), 8)
_LANE = ir.IntType(32)


class F32x8(types.Type):
    """The numba type of eight float32 lanes."""

    def __init__(self) -> None:
        super().__init__(name="F32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm: object, fe_type: F32x8) -> None:
        super().__init__(dmm, fe_type, _VECTOR)


def _float32_vector(ty: types.Type) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == types.float32 and ty.ndim == 1 and ty.layout == "C"


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
    if acc != f32x8 or not (_float32_vector(a) and _float32_vector(b)):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        total, x, x_at, y, y_at = args

        def load(array, array_type, at):
            data = context.make_array(array_type)(context, builder, array).data
            pointer = builder.bitcast(builder.gep(data, [at]), _VECTOR.as_pointer())
            return builder.load(pointer, align=4)

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), "llvm.fma.v8f32")
        return builder.call(fma, [load(x, sig.args[1], x_at), load(y, sig.args[3], y_at), total])

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
