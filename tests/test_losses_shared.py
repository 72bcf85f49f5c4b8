"""The two things every loss shares (repro/losses/shared.py): the shape check and the
full-precision region, and that every loss file uses them instead of its own copy."""
import ast
import re

import pytest
import torch

from repro.losses.shared import check_shapes, full_precision
from tests.conftest import ROOT

LOSS_FILES = sorted(p for p in (ROOT / "repro/losses").glob("*.py") if p.name not in ("__init__.py", "shared.py"))


def test_check_shapes_names_every_shape_and_the_rule():
    good = torch.zeros(4, 3)
    check_shapes((good, good), ("z1", "z2"), min_batch=2)
    for bad in (torch.zeros(4, 2), torch.zeros(5, 3), torch.zeros(4, 3, 1), torch.zeros(4)):
        with pytest.raises(ValueError) as err:
            check_shapes((good, bad), ("z1", "z2"))
        assert f"z1 has shape (4, 3), z2 has shape {tuple(bad.shape)}" in str(err.value)
    with pytest.raises(ValueError, match=r"\(batch >= 8, dim\).*view 1 has shape \(4, 3\)"):
        check_shapes([good, good], min_batch=8)
    with pytest.raises(ValueError, match="need at least 2 views, got 1"):
        check_shapes([good], min_count=2)


def test_full_precision_turns_autocast_off_for_the_device_of_the_first_tensor():
    @full_precision
    def product(views, weight):
        return views[0] @ weight

    a, w = torch.randn(8, 16), torch.randn(16, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ w).dtype == torch.bfloat16          # the test exercises a lowered matmul
        out = product([a], w)
    assert out.dtype == torch.float32 and torch.equal(out, a @ w)
    assert product.__name__ == "product"


@pytest.mark.parametrize("path", LOSS_FILES, ids=lambda p: p.name)
def test_every_loss_file_uses_the_shared_check_and_precision_and_keeps_no_copy(path):
    source = path.read_text()
    # no autocast block of its own, no equal-shape test of its own (queue/state checks are different)
    assert "torch.autocast" not in source and not re.search(r"\.shape != [\w\[\]]+\.shape\b", source)
    imported = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
                and node.module == "repro.losses.shared" for alias in node.names}
    assert imported - {"at_least_float32"} == {"check_shapes", "full_precision"}   # fp16/bf16 -> fp32, fp64 kept
    docstring = ast.get_docstring(ast.parse(source), clean=False)
    assert len(docstring.splitlines()) <= 15 and "docs/sources.md section" in docstring
