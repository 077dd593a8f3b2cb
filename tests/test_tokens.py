"""``restlit.tokens``: offsets derived from sampled ids, and the regions they give."""

from __future__ import annotations


def test_completion_offsets_partition_the_decoded_text(smollm2_tokenizer):
    from restlit.regions import Region, token_regions
    from restlit.tokens import completion_offsets

    tok = smollm2_tokenizer
    text = '<think> héllo 日本語 </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>'
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    decoded, offsets = completion_offsets(tok, ids)
    assert decoded == text and len(offsets) == len(ids)
    assert offsets[-1][0] == offsets[-1][1]  # EOS: empty offsets
    assert all(a <= b <= len(text) for a, b in offsets)
    assert all(offsets[i][1] <= offsets[i + 1][1] for i in range(len(offsets) - 1))
    regions = token_regions(decoded, offsets)
    assert regions[-1] is Region.FORMAT
    name_at = text.index('"f"')
    assert any(r is Region.TOOL_NAME and a <= name_at + 1 < b for (a, b), r in zip(offsets, regions))
    # no token of the multi-byte characters in the reasoning is mistaken for FORMAT
    think_end = text.index("</think>")
    assert all(r is Region.THINK for (a, b), r in zip(offsets, regions) if 7 <= a and b <= think_end)
