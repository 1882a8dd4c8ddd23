"""Native MXFP4 -> bf16 dequantization (ops/native.mxfp4_to_bf16, native_src/dequant.c) against mxfp4.dequantize.

Every MXFP4 value is a bf16 value, so the result must equal the fp32 reference rounded to bf16 bit for bit, for
every flavour, over every nibble and the extreme scales (0: subnormal products, 255: infinities). Needs the extension.
"""

from __future__ import annotations

import pytest
import torch

from gptoss import mxfp4
from gptoss.ops import native

pytestmark = pytest.mark.usefixtures("native_ext")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 90), (2, 4097, 3), (0, 4)])
def test_matches_reference_bit_for_bit(shape: tuple[int, ...], threads: int, isa: str) -> None:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(sum(shape))
    blocks = torch.randint(0, 256, (*shape, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(90, 165, shape, dtype=torch.uint8, generator=g)
    if scales.numel() >= 3:
        scales.view(-1)[:3] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    got = native.mxfp4_to_bf16(blocks, scales)
    want = mxfp4.dequantize(blocks, scales)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape == (*shape[:-1], shape[-1] * 32)
    assert torch.equal(got.float(), want)  # exact: nothing was rounded


def test_bad_input_is_named() -> None:
    blocks, scales = torch.zeros(2, 3, 16, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="expected uint8 blocks"):
        native.mxfp4_to_bf16(blocks.float(), scales)
    with pytest.raises(ValueError, match=r"blocks \(2, 3, 16\) do not match scales \(2, 4\)"):
        native.mxfp4_to_bf16(blocks, torch.zeros(2, 4, dtype=torch.uint8))
